// The report's charts, drawn from its embedded data; each is left on window.charts by id.
const data = JSON.parse(document.getElementById("report-data").textContent);
window.charts = {};
function chart(id, config) {
  const canvas = document.getElementById(id);
  if (canvas) window.charts[id] = new Chart(canvas, config);
}
const linear = {type: "linear", title: {display: true}};
if (data.requests) {
  const t = data.over_time.map(p => p.t);
  chart("latency-over-time", {type: "line", data: {datasets: [
    {label: "p50 ms", data: data.over_time.map(p => ({x: p.t, y: p.p50_ms}))},
    {label: "p99 ms", data: data.over_time.map(p => ({x: p.t, y: p.p99_ms}))}]},
    options: {animation: false, scales: {x: {...linear, title: {display: true, text: "s since start"}}}}});
  const bins = data.histogram.up_to_ms.map(ms => "≤ " + (ms < 10 ? ms.toFixed(1) : ms.toFixed(0)));
  chart("latency-histogram", {type: "bar", data: {labels: bins, datasets: [
    {label: "requests by duration (ms, log-spaced bins)", data: data.histogram.counts}]},
    options: {animation: false}});
  const classes = [...new Set(data.over_time.flatMap(p => Object.keys(p.statuses)))].sort();
  chart("statuses-over-time", {type: "bar", data: {labels: t.map(x => x.toFixed(1) + " s"),
    datasets: classes.map(c => ({label: c, data: data.over_time.map(p => p.statuses[c] || 0)}))},
    options: {animation: false, scales: {x: {stacked: true}, y: {stacked: true}}}});
  chart("injections", {type: "bar", data: {labels: Object.keys(data.injections),
    datasets: [{label: "injections by type", data: Object.values(data.injections)}]},
    options: {animation: false, indexAxis: "y"}});
}

"""The docs are tests: every fenced block of README.md, docs/*.md and examples/**/README.md
becomes a pytest item through Sybil (the root conftest.py collects them).

How each block runs (README.md's Development section says it for writers):

- ``python``: executed in the document's namespace (blocks of one file share it, in
  order); ``localhost:3000`` / ``127.0.0.1:3000`` mean the session's ``chaos_server`` (a
  real ``mockforge serve``, reset around the block); a ``test_*`` function the block
  defines is called with the pytest fixtures it names. An HTML comment
  ``<!-- invisible-code-block: python ... -->`` is setup the reader does not see
  (``chaos_server_url()`` gives it the server).
- ``bash``: line by line (a trailing ``\\`` or an open quote joins lines, ``# ...`` is a
  comment, ``exits N`` in it the exit status expected, else 0): ``curl`` for real,
  ``mockforge`` verbs in this process (what the console script runs), ``mockforge serve``
  and ``gunicorn`` started for real on a free port (side by side; the block's later
  lines talk to the last, as a reader's other shell would, and it must answer; a port
  the block names, ``--port 8443``, is mapped to the one taken; with ``--certfile``
  over https), ``python ...`` and ``chaos run`` as subprocesses, ``openssl`` (a
  throwaway certificate) in the block's folder, ``pip install`` checked (the extra
  or folder must exist) rather than run. Each document runs in a folder of its own
  holding examples/flask_app's ``chaos.yaml``; ``$TOKEN`` is a token.
- ``yaml``: ``mockforge validate`` accepts it, and every value under ``chaos:`` is the one
  the loaded config holds (a key the loader drops is a failure).
- ``<!-- output of: COMMAND -->`` right before a block: COMMAND runs as a bash line and
  every line of the block must be in what it prints (``json``: the same document).
- ``<!-- not run: WHY -->`` right before a block: skipped, with WHY as the reason.

Any other block fails, naming the file and line: a new block is run or marked, never
silently left out.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from click.testing import CliRunner
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer

ROOT = Path(__file__).resolve().parent.parent
PATTERNS = ["README.md", "docs/*.md", "examples/**/README.md"]
# Before a block: the marker that says it is not run, or what it is the output of.
_BEFORE = re.compile(r"<!--\s*(not run|output of):\s*(.+?)\s*-->", re.DOTALL)
_LOCAL = re.compile(r"(?:http://)?(?:localhost|127\.0\.0\.1):3000")
_SHELLS = {"bash", "sh", "shell", "console"}


@attrs.frozen
class Block:
    """One fenced block and what stands right before it."""

    language: str
    source: str
    line: int
    marker: str | None = None  # "not run" or "output of"
    argument: str = ""
    invisible: bool = False

    @property
    def runner(self) -> str | None:
        """How it runs, or None when nothing can run it (a failure unless marked)."""
        if self.marker == "not run":
            return "skip"
        if self.marker == "output of":
            return "output"
        if self.language == "python":
            return "python"
        if self.language in _SHELLS:
            return "shell"
        if self.language == "yaml":
            return "yaml"
        return None

    @property
    def needs_server(self) -> bool:
        """Starts a server or talks to one (so it is marked ``server``)."""
        if self.runner == "skip":
            return False
        text = self.argument if self.runner == "output" else self.source
        if self.runner in ("shell", "output"):
            return any(_serves(words) for line in _lines(text) for words in _commands(line))
        return self.runner == "python" and bool(
            re.search(r":3000|\bchaos_server|\bchaos\.", text)  # talks to chaos_server
        )


def _fences(document: Document) -> Iterable[Region]:
    lexer = RawFencedCodeBlockLexer(
        info_pattern=re.compile(r"(?P<language>[^\n]*)$\n", re.MULTILINE),
        mapping={"language": "language", "source": "source"},
    )
    for region in lexer(document):
        before = document.text[: region.start].rstrip(" \t")  # the line before the fence:
        comment = before[before.rfind("<!--") :].strip() if before.endswith("-->\n") else ""
        found = _BEFORE.fullmatch(comment)
        marker = found.groups() if found else (None, "")
        language = region.lexemes["language"].strip().split(" ")[0]
        line = document.text.count("\n", 0, region.start) + 1
        region.parsed = Block(language, str(region.lexemes["source"]), line, *marker)
        region.evaluator = evaluate
        yield region
    invisible = DirectiveInHTMLCommentLexer(directive="invisible-code-block", arguments="python")
    for region in invisible(document):
        line = document.text.count("\n", 0, region.start) + 1
        region.parsed = Block("python", str(region.lexemes["source"]), line, invisible=True)
        region.evaluator = evaluate
        yield region


def blocks_of(path: Path) -> list[Block]:
    """Every block of one document, in order (for the census test)."""
    document = SYBIL.parse(path)
    return [example.parsed for example in document.examples()]


def documents() -> list[Path]:
    """The documents whose blocks are tests."""
    found = {ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/README.md")}
    return sorted(found)


# -- running -------------------------------------------------------------------------------


class Context:
    """Per document: a folder to run in, and the session's server when a block needs it."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.folder = Path(tempfile.mkdtemp(prefix="mockforge-docs-"))
        shutil.copy(ROOT / "examples" / "flask_app" / "chaos.yaml", self.folder / "chaos.yaml")

    def server(self) -> str:
        url: str = self.namespace["request"].getfixturevalue("chaos_server")
        return url


def setup(namespace: dict[str, Any]) -> None:
    context = Context(namespace)
    namespace["__docs__"] = context
    namespace["chaos_server_url"] = context.server  # for invisible setup blocks


def teardown(namespace: dict[str, Any]) -> None:
    reap()
    shutil.rmtree(namespace["__docs__"].folder, ignore_errors=True)


# Servers the blocks started, told to stop; waited for once the document is done.
_STOPPING: list[tuple[subprocess.Popen[bytes], Any]] = []


def reap() -> None:
    while _STOPPING:
        process, log = _STOPPING.pop()
        _stop(process)
        log.close()


def evaluate(example: Example) -> None:
    block: Block = example.parsed
    context: Context = example.namespace["__docs__"]
    path = Path(example.path)
    where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{block.line}"
    runner = block.runner
    if runner is None:
        pytest.fail(
            f"{where}: a ```{block.language or '(no language)'} block that nothing runs: make "
            "it a python/bash/yaml block, or put <!-- not run: WHY --> or "
            "<!-- output of: COMMAND --> on the line before it (tests/doc_blocks.py)",
            pytrace=False,
        )
    if runner == "skip":
        pytest.skip(f"{where}: not run: {block.argument}")
    url = context.server() if block.needs_server else ""
    if url:
        _reset(url)
    previous = Path.cwd()
    os.chdir(context.folder)
    try:
        if runner == "python":
            _run_python(block, example.namespace, url, where)
        elif runner == "shell":
            with Shell(context, url, where) as shell:
                for line in _lines(block.source):
                    shell.run(line)
        elif runner == "yaml":
            _run_yaml(block, context, where)
        else:
            _run_output(block, context, url, where)
    finally:
        os.chdir(previous)
        if url:
            _reset(url)


def _reset(url: str) -> None:
    request = urllib.request.Request(url + "/api/chaos/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def _local(text: str, url: str) -> str:
    """The docs' localhost:3000 made the test's server (keeping a scheme where written)."""
    if not url:
        return text
    host = url.partition("://")[2]
    return _LOCAL.sub(lambda m: url if m.group().startswith("http") else host, text)


def _run_python(block: Block, namespace: dict[str, Any], url: str, where: str) -> None:
    before = set(namespace)
    code = compile(_local(block.source, url), where, "exec")
    exec(code, namespace)  # the reader's code, as they would run it
    request = namespace["request"]
    for name in sorted(set(namespace) - before):
        test = namespace[name]
        if name.startswith("test_") and callable(test):
            names = test.__code__.co_varnames[: test.__code__.co_argcount]
            test(**{arg: request.getfixturevalue(arg) for arg in names})


def _run_yaml(block: Block, context: Context, where: str) -> None:
    from mockforge_wsgi.cli import main
    from mockforge_wsgi.config import load_config
    from mockforge_wsgi.scenarios import load_scenarios

    path = context.folder / "block.yaml"
    path.write_text(block.source, encoding="utf-8")
    checked = CliRunner().invoke(main, ["validate", str(path)])
    assert checked.exit_code == 0, f"{where}: mockforge validate: {checked.output}"
    document = yaml.safe_load(block.source)
    assert isinstance(document, dict), f"{where}: not a mapping"
    outside = sorted(set(document) - {"chaos", "routes", "observability"})
    assert not outside, f"{where}: {outside} outside chaos: (a config ignores them)"
    chaos = document.get("chaos", (document.get("observability") or {}).get("chaos"))
    if chaos is not None:
        config = load_config(path, environ={})
        _same({k: v for k, v in chaos.items() if k != "scenarios"}, config, "chaos", where)
        loaded = {scenario.name: scenario for scenario in load_scenarios(path)}
        for name, written in (chaos.get("scenarios") or {}).items():
            assert name in loaded, f"{where}: scenario {name} was not loaded"
            assert written.get("description", loaded[name].description) == loaded[name].description
            sections = {k: v for k, v in written.items() if k not in ("description", "override")}
            _same(sections, loaded[name].config, f"chaos.scenarios.{name}", where)


def _same(written: Any, loaded: Any, path: str, where: str) -> None:
    """Every value written is the one loaded (a silently dropped key is a failure)."""
    if isinstance(written, dict) and attrs.has(type(loaded)):
        for key, value in written.items():
            assert hasattr(loaded, key), f"{where}: {path}.{key} is not in the loaded config"
            _same(value, getattr(loaded, key), f"{path}.{key}", where)
    elif isinstance(written, dict) and isinstance(loaded, dict):
        for key, value in written.items():
            assert key in loaded, f"{where}: {path}.{key} is not in the loaded config"
            _same(value, loaded[key], f"{path}.{key}", where)
    elif isinstance(written, list) and isinstance(loaded, (list, tuple)):
        assert len(written) == len(loaded), f"{where}: {path} has {len(loaded)} items"
        if all(not isinstance(item, (dict, list)) for item in written):
            assert [_plain(x) for x in written] == [_plain(x) for x in loaded], (where, path)
    elif not isinstance(written, (dict, list)):
        assert _plain(written) == _plain(loaded), f"{where}: {path}: {written!r} != {loaded!r}"


def _plain(value: Any) -> Any:
    return str(value) if not isinstance(value, (int, float, bool)) or value is None else value


def _run_output(block: Block, context: Context, url: str, where: str) -> None:
    with Shell(context, url, where) as shell:
        _, out = shell.run(block.argument)
    if block.language == "json":
        assert json.loads(out) == json.loads(block.source), (where, out)
        return
    said = " ".join(out.split())
    missing = [line for line in block.source.splitlines() if " ".join(line.split()) not in said]
    assert not missing, f"{where}: {block.argument} printed:\n{out}\nnot: {missing}"


def _lines(source: str) -> list[str]:
    """Shell lines: a trailing ``\\`` or an open quote joins the next line; comment-only
    lines are left out."""
    lines, pending = [], ""
    for raw in re.sub(r"\s*\\\n\s*", " ", source).splitlines():
        pending = f"{pending}\n{raw}" if pending else raw
        try:
            shlex.split(pending, comments=True)  # a quote in a comment is no quote
        except ValueError:  # a quote still open
            continue
        if pending.strip() and not pending.strip().startswith("#"):
            lines.append(pending.strip())
        pending = ""
    assert not pending, f"an unclosed quote: {pending!r}"
    return lines


def _commands(line: str) -> list[list[str]]:
    """The commands of one line (``A && B``), ``VAR=value`` and ``cd DIR &&`` taken off."""
    words = shlex.split(line.partition("  #")[0])
    commands: list[list[str]] = []
    current: list[str] = []
    for word in [*words, "&&"]:
        if word == "&&":
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [
        [w for w in command if not re.fullmatch(r"[A-Z_]+=.*", w)]
        for command in commands
        if command and command[0] != "cd"
    ]


def _serves(words: list[str]) -> bool:
    """A command that starts a server or talks to one."""
    if words[:1] in (["curl"], ["gunicorn"], ["chaos"]):
        return True
    if words[:1] in (["python"], ["python3"]):
        return words[1:3] != ["-m", "pip"]
    return words[:1] == ["mockforge"] and words[1] in ("serve", "chaos", "scenarios")


def _starts(words: list[str]) -> bool:
    """A command that starts a server."""
    return words[:1] == ["gunicorn"] or words[:2] == ["mockforge", "serve"]


def _console_script(name: str) -> str:
    """The script pip installed beside this interpreter (not ``python -m``, which would put
    the current folder on sys.path for it)."""
    found = shutil.which(name, path=os.path.dirname(sys.executable))
    assert found, f"no {name} script beside {sys.executable}: pip install -e ."
    return found


def _free_port() -> int:
    from servers import free_port

    return free_port()


def _extras() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return set(parser["options.extras_require"])


class Shell:
    """Runs the lines of one block; servers a line starts with ``&`` live to its end."""

    def __init__(self, context: Context, url: str, where: str) -> None:
        self.context, self.url, self.where = context, url, where
        self.servers: list[tuple[subprocess.Popen[bytes], Any]] = []
        self.ports: dict[str, str] = {}  # a port the docs name -> the one the test took
        self.pending: list[tuple[str, subprocess.Popen[bytes], Any, str]] = []
        self.starting = ""  # the line being run, when it is to start a server

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[0] is None:
                self.settle()
        finally:
            for process, _ in self.servers:
                process.terminate()  # each takes a while to stop: reaped later, together
            _STOPPING.extend(self.servers)

    def settle(self) -> None:
        """Wait for the servers started since the last line that needed them: they start
        side by side (each takes a second), and each must answer."""
        pending, self.pending = self.pending, []
        for line, process, log, url in pending:
            code = _wait(process, url + "/api/chaos/status")
            log.seek(0)
            out = log.read().decode(errors="replace")
            assert code is None, f"{self.where}: {line!r} exited {code}:\n{out[-2000:]}"

    def run(self, line: str, *, check: bool = True) -> tuple[int, str]:
        command, _, comment = line.partition("  #")
        exits = re.search(r"exits (\d+)", comment)
        expected = int(exits.group(1)) if exits else 0
        self.starting = line if expected == 0 else ""
        if not all(_starts(words) or "pip" in words[:3] for words in _commands(line)):
            self.settle()  # this line may talk to them
        code, out = self._run(command.strip())
        if check:
            assert code == expected, f"{self.where}: {line!r} exited {code}:\n{out[-2000:]}"
        return code, out

    def _run(self, command: str) -> tuple[int, str]:
        env: dict[str, str] = {}
        cwd = self.context.folder
        for docs, taken in self.ports.items():
            command = re.sub(rf"\b(localhost|127\.0\.0\.1):{docs}\b", rf"\1:{taken}", command)
        words = shlex.split(_local(command, self.url).replace("$TOKEN", "s3cret"))
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if words[:1] == ["cd"]:
            cwd = ROOT / words[1]
            assert words[2] == "&&", command
            words = words[3:]
        if "&&" in words:
            at = words.index("&&")
            code, out = self._command(words[:at], env, cwd)
            if code:
                return code, out
            return self._command(words[at + 1 :], env, cwd)
        return self._command(words, env, cwd)

    def _command(self, words: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
        words = [w for w in words if w != "&"]  # every server stays up to the block's end
        program = words[0]
        if program in ("python", "python3") and words[1:4] == ["-m", "pip", "install"]:
            return self._pip(words[4:])
        if program == "curl":
            return self._curl(words, cwd)
        if program == "openssl":  # a throwaway certificate, in the block's folder
            done = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=60)
            return done.returncode, done.stdout + done.stderr
        if (program == "mockforge" and words[1] == "serve") or program == "gunicorn":
            return self._server(words, env, cwd)
        if program == "mockforge":
            return self._cli(words[1:], env)
        if program in ("python", "python3", "chaos"):
            argv = [sys.executable, *words[1:]] if program != "chaos" else words
            if program == "chaos":
                chaos = shutil.which("chaos")
                assert chaos, "chaos (chaostoolkit, the dev extra) is not installed"
                argv = [chaos, "--no-log-file", *words[1:]]
                if words[1] == "run":  # its journal in the block's folder, not the checkout
                    argv[3:3] = ["--journal-path", str(self.context.folder / "journal.json")]
            done = subprocess.run(
                argv, cwd=ROOT if cwd == self.context.folder else cwd, capture_output=True,
                text=True, timeout=120, env={**os.environ, **env, "NO_PROXY": "127.0.0.1"},
                check=False,
            )  # fmt: skip
            return done.returncode, done.stdout + done.stderr
        raise AssertionError(f"{self.where}: no runner for {' '.join(words)!r}")

    def _pip(self, args: list[str]) -> tuple[int, str]:
        """Installing is the environment's job; the line is right if what it names exists."""
        target = args[-1]
        if args[:1] == ["-e"]:
            folder, _, extras = target.partition("[")
            assert (ROOT / folder / "setup.cfg").exists(), target
            unknown = set(extras.rstrip("]").split(",")) - _extras() - {""}
            assert not unknown, f"{self.where}: no extra {unknown} in setup.cfg"
        else:
            assert (ROOT / target / "pyproject.toml").exists(), target
        return 0, ""

    def _curl(self, words: list[str], cwd: Path) -> tuple[int, str]:
        done = subprocess.run(
            ["curl", *([] if "--fail" in words else ["--fail-with-body"]), "--max-time", "20",
             *words[1:]],
            capture_output=True, timeout=60, check=False, cwd=cwd,
        )  # fmt: skip
        out = done.stdout.decode(errors="replace")
        if done.returncode == 0:
            if "-i" in words:
                assert out.startswith("HTTP/1.1 "), (self.where, out[:200])
            elif "-o" not in words and "format=" not in words[-1]:
                json.loads(out)  # every management answer is JSON
        return done.returncode, out + done.stderr.decode(errors="replace")

    def _cli(self, args: list[str], env: dict[str, str]) -> tuple[int, str]:
        from mockforge_wsgi.cli import main

        if args[0] in ("chaos", "scenarios") and "--url" not in args:
            args = [*args, "--url", self.url]
        invoked = CliRunner().invoke(main, args, env=env)
        out = invoked.output
        if invoked.exit_code == 0:
            assert out.strip(), f"{self.where}: mockforge {' '.join(args)} said nothing"
        if invoked.exception and not isinstance(invoked.exception, SystemExit):
            out += repr(invoked.exception)
        return invoked.exit_code, out

    def _server(self, words: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
        """Start it for real on a free port; once it answers, the block's later lines talk
        to it (as a reader's other shell would) until the block ends."""
        port = _free_port()
        if words[0] == "gunicorn":
            bind = [w for w in words[1:] if w not in ("-b", "--bind", "127.0.0.1:3000")]
            argv = [sys.executable, "-m", "gunicorn", *bind, "--bind", f"127.0.0.1:{port}"]
        else:  # the installed console script beside the suite's interpreter, as a user runs it
            argv = [_console_script("mockforge"), *words[1:]]
            if "--port" not in argv:
                argv += ["--port", str(port)]
            for flag in ("--port", "--admin-port", "--metrics-port"):
                if flag in argv:
                    at = argv.index(flag) + 1
                    taken = str(port if flag == "--port" else _free_port())
                    self.ports[argv[at]] = taken
                    argv[at] = taken
        if "--chdir" in argv:  # written from the checkout's root
            at = argv.index("--chdir") + 1
            argv[at] = str(ROOT / argv[at])
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed when the block ends)
        process = subprocess.Popen(
            argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")} | env,
        )  # fmt: skip
        self.servers.append((process, log))
        tls = "MOCKFORGE_CERTFILE" in env or any(w.split("=")[0] == "--certfile" for w in words)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        if self.starting:  # expected to serve: the next line that needs it waits for it
            self.pending.append((self.starting, process, log, url))
            self.url = url
            return 0, ""
        code = _wait(process, url + "/api/chaos/status")
        log.seek(0)
        return (0 if code is None else code), log.read().decode(errors="replace")


def run_lines(path: Path) -> list[str]:
    """The command lines of a module's docstring (an example's "how to run me")."""
    import ast

    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return [
        line.strip()
        for line in docstring.splitlines()
        if re.match(r"\s*(mockforge|python3?|gunicorn|curl) ", line)
    ]


@contextlib.contextmanager
def shell(where: str) -> Iterator[Shell]:
    """A Shell outside the doc items (for the examples' run lines), in a folder of its own."""
    context = Context({})
    try:
        with Shell(context, "", where) as running:
            yield running
    finally:
        reap()
        shutil.rmtree(context.folder, ignore_errors=True)


def _wait(process: subprocess.Popen[bytes], url: str) -> int | None:
    """None once ``url`` answers; the exit status if the process ends first. (Over TLS
    it asks whether the server answers; the block's own lines check the certificate.)"""
    deadline = time.monotonic() + 30
    context = ssl._create_unverified_context() if url.startswith("https") else None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process.returncode
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5, context=context):
            return None
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer in 30 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """As the tests' servers stop (servers.py): a gunicorn worker forked just before the
    TERM loses it, and its master would wait its graceful timeout (a document's reap
    took 15 s, then killed it); its workers are told themselves after 3 s."""
    from servers import _stop as stop  # here: servers.py imports gunicorn and werkzeug

    stop(process)


SYBIL = Sybil(
    parsers=[_fences],
    patterns=PATTERNS,
    path=str(ROOT),
    setup=setup,
    teardown=teardown,
    fixtures=["request"],
)


def server_items(items: Iterator[Any]) -> Iterator[Any]:
    """The collected doc items that start or use a server (to be marked ``server``)."""
    for item in items:
        block = getattr(getattr(item, "example", None), "parsed", None)
        if isinstance(block, Block) and block.needs_server:
            yield item

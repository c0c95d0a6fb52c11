"""Django's WSGI application wrapped in chaos: one line, no Flask code.

    gunicorn --chdir examples/django_project -k gthread mysite.wsgi:application
    cd examples/django_project && mockforge serve --app mysite.wsgi:application

The management API answers at /api/chaos (mounted by the middleware). Chaos comes from
MOCKFORGE_CONFIG (a YAML path) and MOCKFORGE_CHAOS_* variables; per-endpoint rate
limits key on Django's route patterns through ``route_for``. Under ``mockforge serve``
serve's middleware takes this one's place (``route_for`` kept), configured by its flags.
"""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import Resolver404, resolve

from mockforge_wsgi import ChaosMiddleware, load_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")


def django_route(environ: dict) -> str:
    """The matched URL pattern ("users/<int:user_id>"), else the path."""
    path = environ.get("PATH_INFO") or "/"
    try:
        return resolve(path).route or path
    except Resolver404:
        return path


application = ChaosMiddleware(
    get_wsgi_application(),
    config=load_config(os.environ.get("MOCKFORGE_CONFIG")),
    route_for=django_route,
)

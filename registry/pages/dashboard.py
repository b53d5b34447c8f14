"""The public national compute dashboard (placeholder until issue 8's dashboard lands)."""

from django.http import Http404


def dashboard_page(request):
    raise Http404

"""The catalog explorer (placeholder until issue 8's explorer lands)."""

from django.http import Http404


def explorer_page(request):
    raise Http404


def explorer_csv(request):
    raise Http404

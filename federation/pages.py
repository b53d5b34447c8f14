"""The operators' federation status page (placeholder until issue 8's page lands)."""

from django.http import Http404


def federation_status_page(request):
    raise Http404

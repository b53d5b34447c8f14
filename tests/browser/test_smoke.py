import pytest

pytestmark = [pytest.mark.browser, pytest.mark.federation]


def test_home_page_loads(federation, visit):
    tab = visit()
    tab.goto(federation.national.url + "/")
    assert tab.page.title()
    tab.screenshot("smoke-home")

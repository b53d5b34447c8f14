"""Pages in real headless Chromium: Debian's /usr/bin/chromium driven by Playwright, against two live
nodes (gunicorn, their own PostgreSQL databases) holding demo catalogs, the provincial one synced into
the national one. Every page visit fails on a browser console error or an uncaught page error, and
saves a screenshot under ``test-output/screenshots/``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.nodes import Node, create_node, join
from tests.support.processes import ROOT

CHROMIUM = os.environ.get("CIR_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "browser-test-password-1"

USERS = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from registry.models import Provider, ProviderMembership
User = get_user_model()
operator = User.objects.create_user("operator", password="{password}", is_staff=True)
operator.groups.add(Group.objects.get(name="Platform operators"))
staff = User.objects.create_user("staff", password="{password}", is_staff=True)
provider = Provider.objects.filter(source="local").order_by("prefix").first()
ProviderMembership.objects.create(user=staff, provider=provider)
print(provider.prefix)
"""


@dataclass
class Federation:
    national: Node
    provincial: Node
    staff_provider: str


@pytest.fixture(scope="session")
def federation() -> Iterator[Federation]:
    national = create_node("web-national", role="national")
    provincial = create_node("web-gz", role="provincial", code="52")
    nodes = [national, provincial]
    try:
        for node in nodes:
            node.start_server()
        join(provincial, national, anchor=national, prefix="86.52")
        national.manage("cir_demo", "--seed", "7", "--resources", "120", "--json")
        provincial.manage("cir_demo", "--seed", "8", "--resources", "240", "--json")
        provincial.manage("cir_credentials_issue", "--missing")
        national.manage("cir_sync", "--once", "--json")
        staff_provider = national.shell(USERS.format(password=PASSWORD)).strip().splitlines()[-1]
        yield Federation(national, provincial, staff_provider)
    finally:
        for node in nodes:
            node.drop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class Visit:
    """One browser tab that records console errors and uncaught exceptions."""

    page: object
    errors: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    def goto(self, url: str, *, status: int = 200):
        response = self.page.goto(url)
        assert response is not None and response.status == status, (url, response and response.status)
        self.page.wait_for_load_state("networkidle")
        return response

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_no_console_errors(self) -> None:
        assert self.errors == [], "browser console errors:\n" + "\n".join(self.errors)

    def assert_fits_width(self) -> None:
        overflow = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than the viewport"


_EXPECTED_DOCUMENT_STATUS = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")


@pytest.fixture
def visit(browser) -> Iterator[callable]:
    """``visit(width=1280)`` opens a fresh browser context (own cookies, language) of that width."""
    contexts = []
    visits = []

    def open_tab(*, width: int = 1280, height: int = 900, locale: str = "en-US") -> Visit:
        context = browser.new_context(viewport={"width": width, "height": height}, locale=locale)
        contexts.append(context)
        page = context.new_page()
        tab = Visit(page)

        def on_console(message) -> None:
            if message.type != "error":
                return
            # A deliberate 4xx page (unknown UCRI, 410 tombstone) is logged by Chromium as a failed
            # document load; the test states that status explicitly, so it is not an error here.
            matched = _EXPECTED_DOCUMENT_STATUS.search(message.text)
            if matched and int(matched.group(1)) in tab.allowed_statuses:
                return
            tab.errors.append(f"console: {message.text} ({message.location})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
        visits.append(tab)
        return tab

    yield open_tab
    for context in contexts:
        context.close()
    for tab in visits:
        tab.assert_no_console_errors()


def sign_in(tab: Visit, base_url: str, username: str, next_path: str) -> None:
    tab.goto(f"{base_url}/admin/login/?next={next_path}")
    tab.page.fill("#id_username", username)
    tab.page.fill("#id_password", PASSWORD)
    tab.page.click("input[type=submit]")
    tab.page.wait_for_load_state("networkidle")


def node_rows(node: Node, sql: str, params: tuple = ()) -> list[tuple]:
    """Read a node's own database directly: the independent side of the dashboard comparisons."""
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={node.database}") as conn:
        return conn.execute(sql, params).fetchall()


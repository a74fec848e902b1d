"""The dashboard in a real browser (Debian's chromium, driven by playwright) while a real job
trains on the sandbox: the pages load with no console error, the running job's loss curve
grows while the test watches, and the token is enforced. Screenshots are kept in
$UGRO_TEST_ARTIFACTS (default test-artifacts/ in the checkout)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_ugro
from tests.integration.conftest import TOKEN, shot
from ugro.display.console import number

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

# Long enough to watch: a step logged each step, for about half a minute on the sandbox.
WATCHED = ["--", "--max-steps", "60", "--logging-steps", "1", "--save-strategy", "no"]

# Figures as the API gives them, with what they are: the page and the CLI must agree.
SAMPLE_FIGURES = [
    (12217.1, "tokens/s"),
    (2.34567, "final loss"),
    (12, "steps"),
    (123456, "tokens"),
    (0.0002, "train.learning_rate"),
    (34.56, "duration (s)"),
    (None, "best loss"),
]


def test_a_running_jobs_curve_grows_in_the_browser(sandbox, dashboard, browser) -> None:
    env = {"UGRO_CONFIG": str(sandbox.cluster_file)}
    started = run_ugro("launch", "--name", "watched", "--detach", *WATCHED, env=env)
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        # Without the token: refused, and nothing of the cluster shown.
        response = page.goto(f"{dashboard}/#/job/{job_id}")
        assert response is not None and response.status == 401
        assert "A token is required" in page.content() and job_id not in page.content()
        problems.clear()  # the browser reports the refused page itself as an error
        # With it: the overview, then the job's page.
        page.goto(f"{dashboard}/?token={TOKEN}")
        assert "token=" not in page.url  # it went into a cookie, off the address bar
        page.wait_for_selector(f"text={job_id}", timeout=30_000)
        page.wait_for_selector("text=gpu2")
        shot(page, "overview")
        # One number format: the page writes every figure as the CLI's tables do.
        for value, key in SAMPLE_FIGURES:
            shown = page.evaluate("([value, key]) => fmt(value, key)", [value, key])
            assert shown == number(value, key), (value, key, shown)
        page.goto(f"{dashboard}/#/job/{job_id}")
        chart = page.locator("#loss-chart")

        def points() -> int:
            return int(chart.get_attribute("data-points") or 0) if chart.count() else 0

        deadline = time.monotonic() + 240
        while points() < 3 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        seen = points()
        assert seen >= 3, f"no curve after 240 s: {page.content()[:2000]}"
        shot(page, "job-early")
        deadline = time.monotonic() + 120
        while points() <= seen and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert points() > seen, "the curve did not grow while the page was open"
        assert page.locator("text=r2 gpu2").count() >= 1  # each rank's own line
        # Each node's telemetry, drawn (memory and utilisation, a line per node).
        page.wait_for_selector("#nodes .uplot canvas", timeout=30_000)
        assert page.locator("#nodes .uplot").count() == 2
        shot(page, "job-growing")
        page.goto(f"{dashboard}/#/compare?jobs={job_id},{job_id}")
        page.wait_for_timeout(500)
        assert problems == [], problems
    finally:
        page.close()
        run_ugro("stop", job_id, env=env)

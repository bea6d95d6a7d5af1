"""The page in a real browser, used as a student would: headless Chromium (Debian's) driven by
Playwright for Python, on web/ served from a loopback port. Without Chromium or Playwright these
tests are skipped, with the reason."""
import importlib.util
import os
import sys

import pytest
import torch

import checkpoint
import sample
import sampling
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "web"))
import browser  # noqa: E402
from test_web import read_model_bin  # noqa: E402

pytestmark = [
    pytest.mark.skipif(browser.CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="Playwright for Python is not installed (pip install playwright)"),
]


@pytest.fixture(scope="module")
def site():
    with browser.serve() as url, browser.chromium() as chromium:
        yield url, chromium


@pytest.fixture
def page(site):
    url, chromium = site
    page = browser.open_page(chromium, url)
    yield page
    assert page.errors == [], "the page reported errors in its console"
    page.close()


def text_of(page):
    """The text as the page shows it, newlines as newlines (the page marks each with ⏎)."""
    return page.inner_text("#text").replace("⏎\n", "\n")


def bar_heights(page):
    return page.eval_on_selector_all("#panels .bar > div", "bars => bars.map(b => b.style.height)")


def test_greedy_steps_write_sample_py_s_characters(page):
    """Lesson 1 (greedy), twenty steps by keyboard: the characters sample.py --temperature 0 writes."""
    page.select_option("#preset", "0")
    page.focus("#step")
    for _ in range(20):
        page.keyboard.press("s")
    model, meta, _ = checkpoint.load()
    idx = torch.tensor([checkpoint.encode(sample.ARTICLE_PROMPT, meta["stoi"])])
    expected = checkpoint.decode(sampling.generate(model, idx, 20, temperature=0)[0], meta["itos"])
    assert text_of(page) == expected


def test_a_seeded_lesson_draws_what_python_draws_on_the_same_weights(page):
    """Lesson 4 (temperature 2, top-k 5), seed 1337: the page's random numbers are torch's."""
    page.select_option("#preset", "3")
    for _ in range(30):
        page.click("#step")
    model, itos = read_model_bin(os.path.join(ROOT, "web", "model.bin"))
    stoi = {c: i for i, c in enumerate(itos)}
    idx = torch.tensor([checkpoint.encode(sample.ARTICLE_PROMPT, stoi)])
    out = sampling.generate(model, idx, 30, sampling.Decoding(temperature=2.0, top_k=5),
                            generator=torch.Generator().manual_seed(1337))
    assert text_of(page) == checkpoint.decode(out[0], itos)
    assert page.inner_text("#command code") == "python sample.py --walkthrough --temperature 2 --top_k 5"


def test_a_slider_moved_by_keyboard_redraws_the_bars(page):
    page.select_option("#preset", "1")  # pure sampling: one panel
    before = bar_heights(page)
    assert page.locator("#panels .panel").count() == 1
    page.focus("#setting-temperature")
    for _ in range(10):
        page.keyboard.press("ArrowRight")  # 1.0 -> 1.5, in steps of 0.05
    assert page.locator("#panels .panel").count() == 2  # the model, then after temperature 1.5
    assert bar_heights(page)[15:] != before
    assert "--temperature 1.5" in page.inner_text("#command code")
    assert page.input_value("#preset") == "free"


def test_top_k_greys_out_what_it_removes(page):
    page.select_option("#preset", "3")
    last = page.locator("#panels .panel").last
    assert "5 of 65" in last.inner_text()
    assert last.locator(".bar:not(.removed)").count() == 5 and last.locator(".bar.removed").count() >= 10


def test_the_toy_distribution(page):
    page.select_option("#preset", "toy")
    labels = page.eval_on_selector_all("#panels .bar span", "spans => spans.map(s => s.textContent)")
    assert labels == ["小", "冬", "瓜"]
    for _ in range(10):
        page.click("#step")
    assert len(text_of(page)) == 10 and set(text_of(page)) <= set("小冬瓜")


def test_chinese(page):
    page.click("#zh")
    assert page.inner_text("#step") == "单步"
    page.select_option("#preset", "0")
    name, rule = sample.LESSON[0][1]
    assert page.inner_text("#lesson") == f"{name}: {rule}"
    assert "个可以被抽到" in page.inner_text("#panels")
    page.click("#en")
    assert page.inner_text("#step") == "Step"


def test_a_character_outside_the_vocabulary_is_one_line(page):
    page.fill("#prompt", "Ångström")
    page.dispatch_event("#prompt", "change")
    assert page.inner_text("#status") == "characters not in the vocabulary: \"Å\" \"ö\""
    assert page.locator("#panels .panel").count() == 0


def test_running_and_pausing(page):
    page.select_option("#preset", "1")
    page.click("#run")
    page.wait_for_function("document.getElementById('text').innerText.length > 40")
    page.click("#run")  # pause
    length = len(text_of(page))
    page.wait_for_timeout(200)
    assert len(text_of(page)) == length and page.inner_text("#run") == "Run"

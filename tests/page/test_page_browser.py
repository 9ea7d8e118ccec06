"""The page in a real browser: headless Chromium against a live server over real HTTP.

Uploads each committed digit image and checks the labels shown equal /predict's;
switches layers and checks the feature-map and filter pictures really loaded;
asks for the occlusion heat map; a non-image file shows the error element; with
an API key the page asks for it and then works; the CSP holds (no violation in
the console) and nothing is fetched from another origin; /docs renders offline;
a phone-sized window has no sideways scrolling. Screenshots go to
test-artifacts/page/ (ignored by git).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.page.browser import (
    image_loaded,
    require_browser,
    screenshot,
    start_chromium,
    wait_for,
)
from tests.service.serving import LiveServer, settings

DATA = Path(__file__).resolve().parents[1] / "data"
IMAGES = sorted(DATA.glob("*.png"))
KEY = "page-test-key"


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    require_browser()
    browser = start_chromium()
    try:
        yield browser
    finally:
        browser.quit()


def by_test_id(driver, test_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"[data-testid='{test_id}']")


def predictions(driver) -> dict[str, str]:
    """File name -> the label the page shows, for every prediction card."""
    return driver.execute_script(
        "const out = {};"
        "for (const c of document.querySelectorAll('[data-testid=prediction]'))"
        "  out[c.querySelector('.name').textContent] = c.dataset.label;"
        "return out;"
    )


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait_for(driver, lambda d: d.execute_script(
        "return document.querySelector('[data-testid=model-select]').options.length"),
        "the model list")  # fmt: skip


def upload(driver, paths: list[Path]) -> None:
    by_test_id(driver, "file-input").send_keys("\n".join(str(p) for p in paths))


def foreign_requests(driver, origin: str) -> list[str]:
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return [n for n in names if not n.startswith((origin + "/", "blob:"))]


def console_problems(driver) -> list[str]:
    """Console errors, CSP violations above all (the log is emptied by reading it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    require_browser()
    with LiveServer() as live:
        yield live


def test_uploaded_images_show_the_labels_predict_gives(driver, server: LiveServer) -> None:
    open_page(driver, server.url)
    upload(driver, IMAGES)
    wait_for(driver, lambda d: len(predictions(d)) == len(IMAGES), "one prediction per image")
    shown = predictions(driver)
    with server.client() as client:
        for path in IMAGES:
            r = client.post("/predict", files={"file": (path.name, path.read_bytes())})
            assert shown[path.name] == r.json()["predictions"][0]["label"], path.name
    assert shown == {"seven.png": "7", "three.png": "3", "zero.png": "0"}
    widths = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=prediction] .fill')]"
        ".map(f => f.getBoundingClientRect().width)"
    )
    assert len(widths) >= len(IMAGES) and max(widths) > 50  # the top bar is drawn
    wait_for(driver, lambda d: image_loaded(d, "featuremap"), "the first layer's feature maps")
    screenshot(driver, "predictions")
    assert foreign_requests(driver, server.url) == []
    assert console_problems(driver) == []


def test_layers_show_feature_maps_and_filters(driver, server: LiveServer) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(driver, server.url)
    upload(driver, [DATA / "seven.png"])
    wait_for(driver, lambda d: image_loaded(d, "featuremap"), "the first layer's feature maps")
    select = Select(by_test_id(driver, "layer-select"))
    layers = [o.get_attribute("value") for o in select.options]
    with server.client() as client:
        specs = {f["name"]: f for f in client.get("/models/digits").json()["feature_maps"]}
    assert layers == list(specs)
    for layer in [*layers[1:], layers[0]]:  # the first is on show already
        before = by_test_id(driver, "featuremap").get_attribute("src")
        select.select_by_value(layer)
        wait_for(
            driver,
            lambda d, b=before: (
                by_test_id(d, "featuremap").get_attribute("src") != b
                and image_loaded(d, "featuremap") > 0
            ),
            f"feature maps of {layer}",
        )
        if specs[layer]["has_filters"]:
            wait_for(driver, lambda d: image_loaded(d, "filters") > 0, f"filters of {layer}")
        else:
            wait_for(driver, lambda d: not by_test_id(d, "filters").is_displayed(),
                     f"no filter picture for {layer}")  # fmt: skip
        screenshot(driver, f"layer-{layer}")
    assert console_problems(driver) == []


def test_the_heat_map(driver, server: LiveServer) -> None:
    open_page(driver, server.url)
    upload(driver, [DATA / "three.png"])
    wait_for(driver, lambda d: image_loaded(d, "featuremap"), "the inside panel")
    by_test_id(driver, "explain-button").click()
    wait_for(driver, lambda d: image_loaded(d, "heatmap") == 256, "the occlusion heat map")
    size = driver.execute_script(
        "const i = document.querySelector('[data-testid=heatmap]');"
        "return [i.naturalWidth, i.naturalHeight];"
    )
    assert size[0] == 256 and size[1] > 256  # the 32 x 32 map upscaled, plus the legend
    driver.execute_script("document.querySelector('[data-testid=heatmap]').scrollIntoView()")
    screenshot(driver, "heatmap")
    assert console_problems(driver) == []


def test_a_file_that_is_not_an_image_shows_the_error(driver, server, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image\n")
    open_page(driver, server.url)
    assert not by_test_id(driver, "error").is_displayed()
    upload(driver, [notes, DATA / "zero.png"])
    wait_for(driver, lambda d: by_test_id(d, "error").is_displayed(), "the error message")
    text = by_test_id(driver, "error").text
    assert "notes.txt" in text and "not an image" in text, text
    wait_for(driver, lambda d: predictions(d) == {"zero.png": "0"}, "the good image's answer")
    screenshot(driver, "error")
    console_problems(driver)  # the 400 itself is logged by the browser; nothing else to check


def test_facts_and_training_pictures(driver, server: LiveServer) -> None:
    open_page(driver, server.url)
    facts = by_test_id(driver, "facts")
    wait_for(driver, lambda d: "Parity" in facts.text, "the model facts")
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in facts.text and "32 \u00d7 32 \u00d7 1" in facts.text
    wait_for(driver, lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('[data-testid=pictures] img')];"
        "return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0);"),
        "the training pictures")  # fmt: skip
    assert console_problems(driver) == []


def test_keyboard_reaches_every_control(driver, server: LiveServer) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(driver, server.url)
    upload(driver, [DATA / "seven.png"])
    wait_for(driver, lambda d: image_loaded(d, "featuremap"), "the inside panel")
    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
    reached = set()
    for _ in range(40):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        reached.add(
            driver.execute_script(
                "const e = document.activeElement; return e.dataset.testid || e.id || e.tagName;"
            )
        )
    assert {"model-select", "file-input", "layer-select", "explain-button"} <= reached, reached


def test_phone_sized_window(server: LiveServer) -> None:
    require_browser()
    phone = start_chromium(390, 844, phone=True)
    try:
        open_page(phone, server.url)
        upload(phone, [DATA / "seven.png"])
        wait_for(phone, lambda d: image_loaded(d, "featuremap"), "the inside panel")
        assert phone.execute_script("return document.documentElement.clientWidth") == 390
        overflow = phone.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow} px of sideways scrolling on a phone"
        screenshot(phone, "phone")
    finally:
        phone.quit()


def test_docs_render_offline(driver, server: LiveServer) -> None:
    driver.get(server.url + "/docs")
    wait_for(driver, lambda d: d.execute_script(
        "const t = document.querySelector('.swagger-ui .info .title');"
        "return t && t.textContent.includes('convserve');"), "Swagger UI")  # fmt: skip
    wait_for(driver, lambda d: "/explain" in d.find_element("id", "swagger-ui").text,
             "the /explain operation")  # fmt: skip
    assert foreign_requests(driver, server.url) == []
    screenshot(driver, "docs")


def test_with_an_api_key_the_page_asks_once_and_then_works() -> None:
    require_browser()
    with LiveServer(settings(api_key=KEY)) as live:
        browser = start_chromium()
        try:
            browser.get(live.url + "/")
            form = by_test_id(browser, "api-key-form")
            wait_for(browser, lambda d: form.is_displayed(), "the API key form")
            by_test_id(browser, "api-key").send_keys("wrong-key\n")
            wait_for(browser, lambda d: "refused" in form.text and form.is_displayed(),
                     "the form to say the key was refused")  # fmt: skip
            by_test_id(browser, "api-key").send_keys(KEY + "\n")
            wait_for(browser, lambda d: d.execute_script(
                "return document.querySelector('[data-testid=model-select]').options.length"),
                "the model list after the key")  # fmt: skip
            assert not form.is_displayed()
            upload(browser, [DATA / "seven.png"])
            wait_for(browser, lambda d: predictions(d) == {"seven.png": "7"}, "the prediction")
            wait_for(browser, lambda d: image_loaded(d, "featuremap"), "feature maps with the key")
            assert (
                browser.execute_script("return sessionStorage.getItem('convserve.apiKey')") == KEY
            )
            browser.refresh()  # the same tab keeps the key: no second question
            wait_for(browser, lambda d: d.execute_script(
                "return document.querySelector('[data-testid=model-select]').options.length"),
                "the model list after a reload")  # fmt: skip
            assert not by_test_id(browser, "api-key-form").is_displayed()
            screenshot(browser, "api-key")
        finally:
            browser.quit()

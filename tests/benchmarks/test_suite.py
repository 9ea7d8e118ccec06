"""The suite's pieces that need no long run: the course model's spec, tables, README markers."""

from __future__ import annotations

from pathlib import Path

from benchmarks import course_model, suite, suite_table
from training.spec import parse_layers


def test_course_model_is_the_issues_architecture() -> None:
    layers = parse_layers(course_model.LAYERS, course_model.INPUT, len(course_model.CLASSES))
    shapes = [(layer.name, layer.output_shape) for layer in layers]
    assert shapes == [("conv2d_1", (84, 84, 16)), ("max_pooling2d_1", (16, 16, 16)),
                      ("conv2d_2", (14, 14, 32)), ("max_pooling2d_2", (7, 7, 32)),
                      ("flatten_1", (1568,))]  # fmt: skip
    first = layers[0].params
    assert (tuple(first["kernel_size"]), tuple(first["strides"])) == ((5, 5), (3, 3))


def point(target: str, form: str, conc: int, images: float, p50: float, per: int = 1) -> dict:
    return {"target": target, "form": form, "concurrency": conc, "images_per_request": per,
            "requests": 100, "errors": 0, "images_per_s": images, "p50_ms": p50}  # fmt: skip


def fake_run() -> dict:
    summary = [point("convserve", "raw", 1, 300.0, 3.0), point("plain1", "raw", 1, 250.0, 3.5),
               point("convserve", "raw", 32, 950.0, 30.0), point("plain1", "raw", 32, 700.0, 40.0),
               point("plain2", "raw", 32, 800.0, 38.0), point("bare", "raw", 1, 330.0, 2.9),
               point("bare", "raw", 32, 1000.0, 28.0),
               point("convserve", "multipart x8", 32, 800.0, 300.0, 8)]  # fmt: skip
    inprocess = {"1": {"images_per_s": 350.0, "p50_ms": 2.8}, "32": {"images_per_s": 1000.0},
                 "256": {"images_per_s": 1000.0}}  # fmt: skip
    served = {"convserve": {"execution": {"chosen": {"inference_threads": 1}, "source": "auto"}}}
    return {"summary": summary, "inprocess": inprocess, "served": served, "command": "x",
            "table": "| t |"}  # fmt: skip


def fake_suite() -> dict:
    machine = {"date": "d", "cpu_count": 2, "cpu": "c", "onnxruntime": "1"}
    return {"command": "python -m benchmarks.suite", "machine": machine,
            "models": {"digits": fake_run()}}  # fmt: skip


def test_targets_are_read_off_the_run() -> None:
    lines = suite_table.targets(fake_suite())
    assert (
        "digits, raw, c=32: 0.95 of the limit (met); 1.19x the best plain (met); "
        "the bare server 1.00 of the limit, convserve 0.95x it" in lines
    )
    assert any(
        line.startswith("digits, multipart x8, c=32: 0.80 of the limit (MISSED") for line in lines
    )
    assert any(
        "raw, c=1: p50 3.00 ms; plain 1w 3.50 ms" in line
        and "(met); the bare server 2.90 ms (+0.10)" in line
        for line in lines
    )
    rows = {(r[1], r[2]): r for r in suite_table.rows(fake_suite())}
    assert rows[("raw", 32)][8] == 1000.0  # the bare column
    assert rows[("multipart x8", 32)][8] is None  # bare takes raw bodies only


def test_readme_block_is_replaced_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{suite_table.START}\nold\n{suite_table.END}\nrest\n")
    result = suite.REPO / "benchmarks/results/x.json"
    suite_table.update_readmes(fake_suite(), result, (readme,))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "| digits | raw" in text and "digits: inference_threads 1 (auto)" in text


def test_ablate_switches_each_change_off(tmp_path: Path) -> None:
    from benchmarks import ablate

    out = ablate.make(tmp_path / "src", list(ablate.SWITCHES))
    for path, on, off in ablate.SWITCHES.values():
        text = (out / path).read_text()
        assert on not in text and off in text

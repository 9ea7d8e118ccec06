"""The measurements behind gpu_check: test images, answer parity, onnxruntime-alone throughput.

Needs only numpy, Pillow, onnxruntime(-gpu) and httpx: the GPU machine has no
TensorFlow and no scikit-learn.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw

from benchmarks import inprocess
from benchmarks.loadgen import multipart_body
from benchmarks.photo import PHOTO
from service.bundle import PROBABILITIES_OUTPUT, Bundle, read_bundle
from service.preprocess import ImageError, preprocess

REPO = Path(__file__).resolve().parent.parent
SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_images(limit: int = 48) -> list[tuple[str, bytes]]:
    """The project's test corpus (tests/imagefiles.py: every mode and container Pillow reads),
    committed files under tests/data, the benchmark photo, and drawn images of odd sizes."""
    out: list[tuple[str, bytes]] = []
    try:
        from tests.imagefiles import good_images

        out += [(img.name, img.data) for img in good_images()]
    except ImportError:  # a checkout without the tests: the rest still makes a fair sample
        pass
    files = sorted(p for p in (REPO / "tests" / "data").glob("*") if p.suffix.lower() in SUFFIXES)
    out += [(p.name, p.read_bytes()) for p in files[:8]]
    out.append((PHOTO.name, PHOTO.read_bytes()))
    rng = np.random.default_rng(6)
    for i in range(8):
        img = Image.new("L", (64 + 8 * i, 48 + 16 * i), color=int(rng.integers(0, 80)))
        draw = ImageDraw.Draw(img)
        for _ in range(3 + i):
            xs = sorted(rng.integers(0, img.width, 2).tolist())
            ys = sorted(rng.integers(0, img.height, 2).tolist())
            draw.line(
                [xs[0], ys[0], xs[1], ys[1]], fill=int(rng.integers(150, 256)), width=3 + i % 4
            )
        if i % 2:
            img = img.convert("RGB")
        fmt = "PNG" if i % 3 else "JPEG"
        out.append((f"drawn{i}.{fmt.lower()}", _encode(img, fmt, quality=92)))
    return out[:limit]


def decodable(model: inprocess.Model, images: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The images this machine's Pillow decodes (AVIF/WebP support varies between builds)."""
    keep = []
    for name, data in images:
        try:
            model.preprocess(data)
        except ImageError:
            continue
        keep.append((name, data))
    return keep


def native_payload(bundle: Bundle) -> tuple[bytes, str]:
    """The photo at the model's input size and mode: no resize at serve time, cheap decode."""
    spec = bundle.input
    with Image.open(PHOTO) as img:
        img = img.convert({"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}[spec.color_mode])
        img = img.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    if spec.color_mode == "rgb":
        return _encode(img, "JPEG", quality=90), "image/jpeg"
    return _encode(img, "PNG"), "image/png"


def cpu_reference(bundle_dir: Path, images: list[tuple[str, bytes]]) -> list[np.ndarray]:
    """Probabilities from an onnxruntime CPU session, one image at a time."""
    model = inprocess.load_model(bundle_dir, provider="cpu")
    return [model.run(model.preprocess(data)[None])[0] for _, data in images]


def service_probabilities(
    base_url: str, name: str, classes: list[str], images: list[tuple[str, bytes]]
) -> list[dict[str, float]]:
    """All class probabilities per image from one multipart POST /predict (top_k = every class)."""
    body, ctype = multipart_body([(n, data, "application/octet-stream") for n, data in images])
    r = httpx.post(
        f"{base_url}/predict",
        params={"model": name, "top_k": len(classes)},
        content=body,
        headers={"Content-Type": ctype},
        timeout=120,
    )
    r.raise_for_status()
    preds = r.json()["predictions"]
    return [{t["label"]: t["probability"] for t in p["top_k"]} for p in preds]


def compare(
    classes: list[str], reference: list[np.ndarray], answers: list[dict[str, float]]
) -> dict:
    """Largest |probability difference| over all images and classes, and any label disagreement."""
    worst, mismatches = 0.0, []
    for i, (ref, got) in enumerate(zip(reference, answers, strict=True)):
        vec = np.array([got.get(c, np.nan) for c in classes], dtype=np.float64)
        worst = max(
            worst, float(np.nanmax(np.abs(vec - ref))) if not np.isnan(vec).all() else np.inf
        )
        if np.isnan(vec).any() or int(np.nanargmax(vec)) != int(np.argmax(ref)):
            mismatches.append(i)
    return {"max_abs_diff": worst, "label_mismatches": mismatches, "images": len(reference)}


def session(
    bundle_dir: Path, provider: str, cuda_options: dict[str, str] | None = None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list = ["CPUExecutionProvider"]
    if provider == "cuda":
        opts = inprocess.cuda_provider_options() | (cuda_options or {})
        providers = [("CUDAExecutionProvider", opts), "CPUExecutionProvider"]
    sess = ort.InferenceSession(str(Path(bundle_dir) / "model.onnx"), options, providers=providers)
    if provider == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"asked for CUDA, the session got {sess.get_providers()}")
    return sess


def direct_parity(bundle_dir: Path, provider: str, images: list[tuple[str, bytes]]) -> dict:
    """onnxruntime on `provider` vs CPU on the same arrays; on CUDA with the service's options
    (TF32 off) and with TF32 allowed (onnxruntime's own default; 10-bit-mantissa convolutions)."""
    bundle = read_bundle(bundle_dir)
    cpu = inprocess.load_model(bundle_dir, provider="cpu")
    batch = np.stack([cpu.preprocess(d) for _, d in images])
    ref = cpu.run(batch)
    variants: dict[str, dict[str, str]] = {"default": {}}
    if provider == "cuda":
        variants |= {"use_tf32=1": {"use_tf32": "1"}}  # the service's default is 0
    out: dict = {"classes": len(bundle.classes)}
    for label, opts in variants.items():
        try:
            sess = session(bundle_dir, provider, opts)
            got = sess.run([PROBABILITIES_OUTPUT], {sess.get_inputs()[0].name: batch})[0]
        except Exception as exc:  # an option this onnxruntime lacks: record it, go on
            out[label] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        out[label] = {
            "max_abs_diff": float(np.max(np.abs(got - ref))),
            "label_mismatches": int(np.sum(got.argmax(1) != ref.argmax(1))),
        }
        if label == "default":  # what the provider really runs with, defaults included
            out["provider_options"] = sess.get_provider_options()
        del sess
    return out


def _timed_runs(run: Callable[[], object], duration: float) -> list[float]:
    for _ in range(3):  # warm-up: cuDNN algorithm search, arena growth
        run()
    times: list[float] = []
    stop = time.perf_counter() + duration
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return sorted(times)


def payload_batches(bundle_dir: Path, payload: bytes) -> Callable[[int], np.ndarray]:
    """n -> n copies of the preprocessed payload as one contiguous batch (what the server runs)."""
    bundle = read_bundle(bundle_dir)
    x1 = preprocess(payload, bundle.input, bundle.preprocessing, max_pixels=inprocess.MAX_PIXELS)
    return lambda n: np.ascontiguousarray(np.broadcast_to(x1, (n, *x1.shape)))


def ort_alone(
    bundle_dir: Path,
    provider: str,
    payload: bytes,
    batches: list[int],
    duration: float,
    *,
    device_input: bool = False,
) -> Iterator[dict]:
    """images/s of session.run on preprocessed batches, host arrays in as the service does;
    with `device_input` the batch already sits on the provider's device (I/O binding, output
    left there too), so on CUDA the difference is what host<->device copies cost."""
    batch_of = payload_batches(bundle_dir, payload)
    sess = session(bundle_dir, provider)
    name = sess.get_inputs()[0].name
    for b in batches:
        x = batch_of(b)
        if device_input:
            binding = sess.io_binding()
            device = "cuda" if provider == "cuda" else "cpu"
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
            binding.bind_output(PROBABILITIES_OUTPUT, device, 0)
            times = _timed_runs(lambda binding=binding: sess.run_with_iobinding(binding), duration)
        else:
            times = _timed_runs(lambda x=x: sess.run([PROBABILITIES_OUTPUT], {name: x}), duration)
        yield {
            "batch": b,
            "input": "device" if device_input else "host",
            "runs": len(times),
            "images_per_s": round(b * len(times) / sum(times), 1),
            "p50_ms": round(times[len(times) // 2] * 1000, 3),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))] * 1000, 3),
        }


def cuda_variants() -> dict[str, dict[str, str]]:
    """CUDA EP options worth knowing about for a conv net, each against the service's defaults."""
    return {
        "default": {},
        "use_tf32=1": {"use_tf32": "1"},
        "cudnn_conv_algo_search=HEURISTIC": {"cudnn_conv_algo_search": "HEURISTIC"},
        "prefer_nhwc=1": {"prefer_nhwc": "1"},
        "cudnn_conv_use_max_workspace=0": {"cudnn_conv_use_max_workspace": "0"},
    }


def option_sweep(
    bundle_dir: Path, provider: str, payload: bytes, batch: int, duration: float
) -> Iterator[dict]:
    """onnxruntime alone at one batch size under each provider-option variant (host arrays in)."""
    x = payload_batches(bundle_dir, payload)(batch)
    variants = cuda_variants() if provider == "cuda" else {"default": {}}
    for label, opts in variants.items():
        t0 = time.perf_counter()
        try:
            sess = session(bundle_dir, provider, opts)
            name = sess.get_inputs()[0].name
            times = _timed_runs(
                lambda s=sess, n=name: s.run([PROBABILITIES_OUTPUT], {n: x}), duration
            )
        except Exception as exc:  # an option this build lacks: record it, go on
            yield {"variant": label, "error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        yield {
            "variant": label,
            "batch": batch,
            "images_per_s": round(batch * len(times) / sum(times), 1),
            "p50_ms": round(times[len(times) // 2] * 1000, 3),
            "setup_s": round(time.perf_counter() - t0 - sum(times), 2),  # session + warm-up
        }
        del sess


def new_batch_size_cost(
    bundle_dir: Path, provider: str, payload: bytes, warmed: list[int], cold: list[int]
) -> list[dict]:
    """What the first run at a batch size nobody ran yet costs against later runs at it.

    On CUDA with EXHAUSTIVE search cuDNN times every convolution algorithm once per
    input shape; this is the latency spike that `pad_batches` (pad to the warmed-up
    sizes) exists to keep away from traffic. The session first runs every `warmed`
    size, as the server's warm-up does.
    """
    batch = payload_batches(bundle_dir, payload)
    sess = session(bundle_dir, provider)
    name = sess.get_inputs()[0].name
    for n in warmed:
        sess.run([PROBABILITIES_OUTPUT], {name: batch(n)})
    out = []
    for n in cold:
        x = batch(n)
        t0 = time.perf_counter()
        sess.run([PROBABILITIES_OUTPUT], {name: x})
        first = time.perf_counter() - t0
        again = _timed_runs(lambda x=x: sess.run([PROBABILITIES_OUTPUT], {name: x}), 0.3)
        out.append({
            "batch": n,
            "first_run_ms": round(first * 1000, 3),
            "p50_ms": round(again[len(again) // 2] * 1000, 3),
            "ratio": round(first / again[len(again) // 2], 1),
        })  # fmt: skip
    return out

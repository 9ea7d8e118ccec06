"""gpu_check.json -> a short markdown report: checks, onnxruntime alone, service, targets."""

from __future__ import annotations

from benchmarks.report import table


def _ref(ort_rows: list[dict], inflight: int) -> dict | None:
    """The onnxruntime-alone row for the largest measured batch the service could have formed."""
    fitting = [r for r in ort_rows if r["batch"] <= inflight]
    return max(fitting, key=lambda r: r["batch"]) if fitting else None


def _model_section(name: str, m: dict) -> list[str]:
    ort_rows = m.get("onnxruntime", [])
    payload = m.get("payload", {})
    lines = [
        f"### {name} (input {m['input']['height']}x{m['input']['width']}x{m['input']['channels']}, "
        f"payload {payload.get('content_type')} {payload.get('bytes')} B)",
        "",
    ]
    if ort_rows:
        device = {r["batch"]: r for r in m.get("onnxruntime_device_input", [])}
        lines += ["onnxruntime alone (preprocessed host arrays in, probabilities out; last two "
                  "columns: input already on the device, I/O binding):", ""]  # fmt: skip
        rows = [[r["batch"], r["images_per_s"], r["p50_ms"], r["p99_ms"],
                 device.get(r["batch"], {}).get("images_per_s"),
                 device.get(r["batch"], {}).get("p50_ms")] for r in ort_rows]  # fmt: skip
        headers = ["batch", "images/s", "p50 ms", "p99 ms", "on-device images/s", "on-device p50"]
        lines.append(table(headers, rows))
        lines.append("")
    if m.get("new_batch_size"):
        lines += ["first run at a batch size not run before, after warming 1, 2, 4, ... (what "
                  "`pad_batches` keeps away from traffic):", ""]  # fmt: skip
        rows = [[r["batch"], r["first_run_ms"], r["p50_ms"], r["ratio"]]
                for r in m["new_batch_size"]]  # fmt: skip
        lines += [table(["batch", "first run ms", "later p50 ms", "first / later"], rows), ""]
    if m.get("options"):
        lines += [
            "onnxruntime alone at the largest batch, by provider option (host arrays in):",
            "",
        ]
        rows = [[o["variant"], o.get("images_per_s"), o.get("p50_ms"), o.get("setup_s"),
                 o.get("error", "")[:80]] for o in m["options"]]  # fmt: skip
        lines += [table(["variant", "images/s", "p50 ms", "setup s", "error"], rows), ""]
    rows = []
    for r in m.get("service", []):
        ref = _ref(ort_rows, r["images_per_request"] * r["concurrency"])
        ratio = r["images_per_s"] / ref["images_per_s"] if ref and ref["images_per_s"] else None
        rows.append(
            [
                r.get("workers", 1),
                r["images_per_request"],
                r["concurrency"],
                r["requests_per_s"],
                r["images_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                ref["batch"] if ref else None,
                ratio,
                r.get("server_cores"),
                r["errors"],
            ]
        )
    if rows:
        lines += ["through the service (HTTP over loopback, separate client processes):", ""]
        lines.append(
            table(
                [
                    "workers",
                    "images/req",
                    "conc",
                    "req/s",
                    "images/s",
                    "p50 ms",
                    "p99 ms",
                    "vs ort batch",
                    "ratio",
                    "srv cores",
                    "errors",
                ],
                rows,
            )
        )
        lines.append("")
    lines += _targets(m, ort_rows)
    return lines


def _targets(m: dict, ort_rows: list[dict]) -> list[str]:
    service = m.get("service", [])
    single = next(
        (r for r in service if r["images_per_request"] == 1 and r["concurrency"] == 1), None
    )
    ort1 = next((r for r in ort_rows if r["batch"] == 1), None)
    singles = [r for r in service if r["images_per_request"] == 1]
    best_single = max(singles, key=lambda r: r["images_per_s"]) if singles else None
    ratios = []
    for r in service:
        ref = _ref(ort_rows, r["images_per_request"] * r["concurrency"])
        if ref and ref["images_per_s"]:
            ratios.append(r["images_per_s"] / ref["images_per_s"])
    out = ["targets:", ""]
    if ratios:
        out.append(
            f"- best images/s ratio to onnxruntime alone on the same batch: {max(ratios):.2f} "
            "(target >= 0.8)"
        )
    if single and best_single and single["images_per_s"]:
        gain = best_single["images_per_s"] / single["images_per_s"]
        out.append(
            f"- dynamic batching, single-image requests: {gain:.1f}x the concurrency-1 throughput "
            f"(c={best_single['concurrency']}, {best_single.get('workers', 1)} worker(s); "
            "target >= 5x for the heavy CNN)"
        )
    if single and ort1 and single["p50_ms"] is not None:
        out.append(
            f"- p50 at concurrency 1: {single['p50_ms']} ms vs onnxruntime alone "
            f"{ort1['p50_ms']} ms "
            f"(+{single['p50_ms'] - ort1['p50_ms']:.2f} ms; target within 2 ms)"
        )
    return [*out, ""]


def markdown(data: dict) -> str:
    machine = data.get("machine", {})
    lines = [
        f"# gpu_check ({data.get('providers')}): {'OK' if data.get('ok') else 'FAILED'}",
        "",
        f"{machine.get('date')}, {machine.get('cpu_count')} CPUs ({machine.get('cpu')}), "
        f"onnxruntime {machine.get('onnxruntime')}, GPU: {machine.get('gpu', 'n/a')}",
        "",
    ]
    if data.get("error"):
        text = " ".join(data["error"].split())
        lines += [f"**error:** {text[:400]}{' … ' + text[-300:] if len(text) > 700 else ''}", ""]
    prov = data.get("checks", {}).get("provider", {})
    lines.append(
        f"- provider: expected {prov.get('expected')}, /models reports {prov.get('reported')} "
        f"-> {'ok' if prov.get('ok') else 'FAILED'}"
    )
    for name, m in data.get("models", {}).items():
        par = m.get("parity", {})
        svc = par.get("service_vs_cpu", {})
        direct = ", ".join(
            f"{k}: {v['max_abs_diff']:.2e}" if "max_abs_diff" in v else f"{k}: {v.get('error')}"
            for k, v in par.get("onnxruntime_vs_cpu", {}).items()
            if isinstance(v, dict) and k != "provider_options"
        )
        lines.append(
            f"- {name}: service vs CPU over {svc.get('images')} images: max |dp| "
            f"{svc.get('max_abs_diff', float('nan')):.2e}, "
            f"label mismatches {svc.get('label_mismatches')} "
            f"-> {'ok' if svc.get('ok') else 'FAILED'}; onnxruntime vs CPU directly: {direct}"
        )
    cuda = next(
        (m["parity"]["onnxruntime_vs_cpu"].get("provider_options", {}).get("CUDAExecutionProvider")
         for m in data.get("models", {}).values() if "onnxruntime_vs_cpu" in m.get("parity", {})),
        None,
    )  # fmt: skip
    if cuda:
        keys = ("use_tf32", "cudnn_conv_algo_search", "cudnn_conv_use_max_workspace",
                "do_copy_in_default_stream", "arena_extend_strategy", "prefer_nhwc",
                "enable_cuda_graph")  # fmt: skip
        shown = ", ".join(f"{k}={cuda[k]}" for k in keys if k in cuda)
        lines.append(f"- CUDA EP options in effect in this script's sessions: {shown}")
    lines.append("")
    for name, m in data.get("models", {}).items():
        if m.get("error"):
            lines += [f"- {name}: **error:** {m['error'][:600]}", ""]
        lines += _model_section(name, m)
    return "\n".join(lines)

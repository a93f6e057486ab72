"""The evaluation report: one self-contained HTML file (OGG audio and JPEG spectrograms inlined as data URIs).

    write_html(report, "out/report.html")     # report: the dict music_eval.evaluate writes as metrics.json
    text_table(report)                         # the same table as plain text (the binary's stderr)

The page: what was compared (sets, counts, embedders, segment), the metric table with one row
per system (generated sets, white noise, ground truth) and the baselines beside each figure, then
one card per prompt: the generated clip and its reference recording as players with their log-mel
spectrograms, the MuLan similarities and the tagger's top tags.  No scripts, no external requests.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import os

import numpy as np

log = logging.getLogger(__name__)


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def columns(report: dict) -> list[tuple[str, str, callable]]:
    """(header, tooltip, row -> cell text) for the metric table."""
    cols = []
    emb = report["embedders"]
    for n, info in emb.items():
        unit = "clips" if info["level"] == "clip" else f"{info['window'] / info['sample_rate']:.2g} s frames"

        def fad_cell(r, n=n):
            f = r["fad"].get(n) or {}
            if f.get("fad") is None:
                return "–"
            return f"{f['fad']:.3f} <small>({f['n_generated']} vs {f['n_real']})</small>"
        cols.append((f"FAD {n}", f"Frechet distance of {n} embeddings to the reference set ({unit}: "
                                 f"generated vs reference count); lower is better", fad_cell))
        if any(r.get("fad_inf", {}).get(n) for r in report["systems"].values()):
            cols.append((f"FAD∞ {n}", "FAD extrapolated to infinitely many samples (fit in 1/N)",
                         lambda r, n=n: _f((r.get("fad_inf", {}).get(n) or {}).get("fad_inf"))))
        for kind, what in (("text", "its prompt's text"), ("audio", "the reference recording of its prompt")):
            key = f"{n}_{kind}"
            if any(key in r for r in report["systems"].values()):
                cols.append((f"{n} sim. to {kind}", f"mean cosine of each clip's {n} embedding with {what}; "
                                                     f"in brackets: shuffled (mismatched) pairs",
                             lambda r, key=key: "–" if key not in r else
                             f"{r[key]['matched']:.3f} <small>(shuf. {_f(r[key]['shuffled'])})</small>"))
        key = f"{n}_tags"
        if any(key in r for r in report["systems"].values()):
            cols.append((f"{n} tag AUC", "mean ROC-AUC of the tags the prompts name (0.5 = chance); in brackets: "
                                         "prompts shuffled",
                         lambda r, key=key: "–" if key not in r or r[key]["mean_auc"] is None else
                         f"{r[key]['mean_auc']:.3f} <small>(shuf. {_f(r[key].get('shuffled_mean_auc'))})</small>"))
    return cols


def text_table(report: dict) -> str:
    import re

    cols = columns(report)
    rows = [["system", "n"] + [c[0] for c in cols]]
    for s, r in report["systems"].items():
        rows.append([s, str(r["n"])] + [re.sub(r"<[^>]+>", "", c[2](r)) for c in cols])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)


def _media(path: str, fmt: str, seconds: float) -> tuple[str | None, str]:
    """The scored middle segment of a clip as an inline audio player source (OGG Vorbis, WAV or
    none) and its 80-bin log-mel spectrogram as an inline JPEG (low frequencies at the bottom)."""
    import soundfile as sf
    from PIL import Image

    from data.audio import load_audio, middle, resample
    from layers.audio_frontend import MelSpec

    x, sr = load_audio(path, allow_silent=True)
    x = middle(x, int(round(seconds * sr)))
    audio = None
    if fmt != "none":
        buf = io.BytesIO()
        if fmt == "ogg":
            sf.write(buf, x, sr, format="OGG", subtype="VORBIS", compression_level=0.8)  # ~38 kB per 10 s
        else:
            sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
        audio = f"data:audio/{'ogg' if fmt == 'ogg' else 'wav'};base64," + base64.b64encode(buf.getvalue()).decode()
    mel = MelSpec()
    y = resample(x, sr, mel.sample_rate)
    y = y[: len(y) // mel.hop * mel.hop]
    img = mel.image(np.asarray(mel(y[None]))[0])
    im = Image.fromarray(img).resize((min(600, img.shape[1]), 120), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)  # ~14 kB; a PNG of a noisy spectrogram is ~100 kB
    return audio, "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1d1d1f;
background:#fafafa;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px}
.meta{color:#555;font-size:13px;line-height:1.5}
table{border-collapse:collapse;font-size:13px;background:#fff;margin-top:8px}
th,td{border:1px solid #ddd;padding:6px 9px;text-align:right;vertical-align:top}
th{background:#f0f0f3;font-weight:600} td:first-child,th:first-child{text-align:left}
tr.generated td:first-child{font-weight:600} tr.reference{background:#f3f8f3} tr.baseline{background:#fbf5f0}
small{color:#777}
.cards{display:grid;grid-template-columns:1fr;gap:14px;margin-top:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px 14px}
.prompt{font-size:15px;margin-bottom:8px} .id{color:#888;font-size:12px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.pair h3{font-size:12px;color:#555;margin:0 0 4px 0;text-transform:uppercase;letter-spacing:.04em}
audio{width:100%;height:34px} img{width:100%;height:110px;image-rendering:auto;border-radius:4px;display:block}
.scores{font-size:13px;margin-top:8px;color:#333} .tag{display:inline-block;background:#eef;border-radius:10px;
padding:1px 8px;margin:2px 3px 2px 0;font-size:12px} .tag.hit{background:#dfd}
.notes{font-size:12px;color:#555;max-width:900px}
"""


def write_html(report: dict, path: str, audio_format: str = "ogg", segment_seconds: float = 10.0) -> str:
    e = html.escape
    cols = columns(report)
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(report['title'])}</title>"
           f"<style>{CSS}</style></head><body>", f"<h1>{e(report['title'])}</h1>"]
    systems = report["systems"]
    primary = report["primary"]
    emb_desc = "; ".join(f"{n} ({i['level']}-level, {i['dim']}-d, {i['window'] / i['sample_rate']:g} s windows)"
                         for n, i in report["embedders"].items())
    out.append(f"<div class=meta>Generated: <code>{e(report['generated'])}</code> ({systems[primary]['n']} clips)<br>"
               f"Reference: <code>{e(report['reference'])}</code> ({systems['ground truth']['n']} clips)<br>"
               f"Scored on the middle {segment_seconds:g} s of each clip. Embedders: {e(emb_desc)}.</div>")
    out.append("<h2>Metrics</h2><table><tr><th>system</th><th>clips</th>" +
               "".join(f"<th title='{e(c[1])}'>{e(c[0])}</th>" for c in cols) + "</tr>")
    for s, r in systems.items():
        out.append(f"<tr class={r['kind']}><td>{e(s)}</td><td>{r['n']}</td>" +
                   "".join(f"<td>{c[2](r)}</td>" for c in cols) + "</tr>")
    out.append("</table>")
    warnings = []
    for n, info in report["embedders"].items():
        counts = [min(f["n_real"], f["n_generated"]) for r in systems.values() for k, f in r["fad"].items()
                  if k == n and f.get("fad") is not None]
        if counts and min(counts) <= info["dim"]:
            warnings.append(f"FAD {n}: as few as {min(counts)} embeddings for {info['dim']} dimensions: the covariances "
                            f"are rank-deficient and FAD is biased upwards by small counts; compare rows only at "
                            f"similar counts (FAD-inf, --fad_inf, removes the 1/N part).")
    notes = [systems["ground truth"].get("fad_note", ""),
             "White noise: Gaussian noise with each generated clip's length and RMS.",
             "Shuffled: every mismatched (clip, text) or (clip, reference) pair; tag AUC shuffled: prompts permuted "
             "(mean of 20)."] + warnings
    out.append("<p class=notes>" + "<br>".join(e(n) for n in notes if n) + "</p>")

    out.append(f"<h2>Per prompt ({len(report['items'])})</h2><div class=cards>")
    for k, it in enumerate(report["items"]):
        if k % 10 == 0:
            log.info("report: prompt %d/%d", k + 1, len(report["items"]))
        out.append(f"<div class=card><div class=prompt>{e(it['text'])} <span class=id>{e(it['id'])}</span></div>"
                   "<div class=pair>")
        for label, p in (("generated", it["audio"]), ("reference", (it.get("reference") or {}).get("audio"))):
            if not p:
                out.append("<div><h3>no reference recording for this prompt</h3></div>")
                continue
            out.append(f"<div><h3>{label}</h3>")
            audio, image = _media(p, audio_format, segment_seconds)
            if audio:
                out.append(f"<audio controls preload=metadata src='{audio}'></audio>")
            out.append(f"<img alt='log-mel spectrogram of the {label} clip' src='{image}'></div>")
        out.append("</div><div class=scores>")
        bits = []
        for key, v in it.items():
            if key.endswith("_text") or key.endswith("_audio"):
                bits.append(f"{e(key.replace('_', ' sim. to '))}: <b>{v:.3f}</b>")
        out.append(" · ".join(bits))
        for key, v in it.items():
            if key.endswith("_top_tags"):
                hits = {lab for lab, _, _ in it.get(key.replace("_top_", "_prompted_"), [])}
                out.append(f"<br>{e(key[:-9])} top tags: " + "".join(
                    f"<span class='tag{' hit' if lab in hits else ''}'>{e(lab)} {s:.2f}</span>" for lab, s in v))
            if key.endswith("_prompted_tags") and v:
                out.append("<br>prompted tags: " + ", ".join(f"{e(lab)} {s:.2f} (rank {rk})" for lab, s, rk in v))
        out.append("</div></div>")
    out.append("</div>")
    tag_sets = [(n, r) for n, r in systems[primary].items() if n.endswith("_tags") and r.get("tags")]
    for n, t in tag_sets:
        out.append(f"<h2>Tag agreement ({e(n[:-5])}, {e(primary)})</h2><table><tr><th>tag</th><th>prompts naming it</th>"
                   "<th>AUC</th><th>mean score, named</th><th>mean score, others</th></tr>")
        for lab, v in sorted(t["tags"].items(), key=lambda kv: -kv[1]["positives"]):
            out.append(f"<tr><td>{e(lab)}</td><td>{v['positives']}</td><td>{v['auc']:.3f}</td>"
                       f"<td>{v['mean_score_named']:.3f}</td><td>{v['mean_score_other']:.3f}</td></tr>")
        out.append("</table>")

    out.append("</body></html>")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)
    return os.path.abspath(path)

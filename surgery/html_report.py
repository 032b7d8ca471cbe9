"""``--html FILE``: the run as one self-contained page (no network, no script, no external font).

The page shows, for each run (one, or one per bucket): the per-pass table (status, per-gate times,
nodes and dynamic dims before and after), the dynamic dims left after each pass as an inline SVG
chart, a histogram of the absolute error of every output (inline SVG, from the last parity check:
the result against the original), and a before/after graph diff: nodes removed, added and changed
per op type. Every string that comes from the model or the user (node, tensor, pass option and file
names) is escaped: model files are untrusted.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import html
from collections.abc import Sequence
from typing import Any

__all__ = ["GraphDiff", "GraphSummary", "render"]

_MAX_NAMES = 50  # node names listed per diff category (the counts are always complete)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _attr_text(attr: Any) -> str:
    """A short, comparable text of an attribute (large tensors by their type and shape only)."""
    value = attr.value
    if isinstance(value, (int, float, str, bytes)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return repr(list(value)) if len(value) <= 64 else f"list[{len(value)}]"
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None:
        return f"tensor {dtype} {shape}"
    return type(value).__name__


@dataclasses.dataclass
class GraphSummary:
    """What the diff compares: per node (key: its name, or op and outputs when unnamed) a signature."""

    nodes: dict[str, tuple[str, str]]
    """key → (op type, signature text: domain, inputs, outputs, attributes)."""

    @classmethod
    def of(cls, model: Any) -> GraphSummary:
        from surgery.graph import iter_graphs

        nodes: dict[str, tuple[str, str]] = {}
        for graph in iter_graphs(model):
            for node in graph:
                outs = [v.name or "" for v in node.outputs]
                key = node.name or f"{node.op_type}->{','.join(outs)}"
                while key in nodes:  # a repeated name (another subgraph): keep both
                    key += "'"
                ins = [(v.name or "") if v is not None else "" for v in node.inputs]
                attrs = ";".join(f"{k}={_attr_text(a)}" for k, a in sorted(node.attributes.items()))
                nodes[key] = (
                    node.op_type,
                    f"{node.domain}|{','.join(ins)}|{','.join(outs)}|{attrs}",
                )
        return cls(nodes)

    def op_counts(self) -> collections.Counter[str]:
        return collections.Counter(op for op, _ in self.nodes.values())


@dataclasses.dataclass
class GraphDiff:
    """Nodes removed, added and changed (same name, another op, edges or attributes), per op type."""

    before: collections.Counter[str]
    after: collections.Counter[str]
    removed: dict[str, list[str]]
    added: dict[str, list[str]]
    changed: dict[str, list[str]]

    @classmethod
    def between(cls, before: GraphSummary, after: GraphSummary) -> GraphDiff:
        removed: dict[str, list[str]] = collections.defaultdict(list)
        added: dict[str, list[str]] = collections.defaultdict(list)
        changed: dict[str, list[str]] = collections.defaultdict(list)
        for key, (op, sig) in before.nodes.items():
            other = after.nodes.get(key)
            if other is None:
                removed[op].append(key)
            elif other[0] != op:  # same name, another op: the old one went, a new one came
                removed[op].append(key)
                added[other[0]].append(key)
            elif other[1] != sig:
                changed[op].append(key)
        for key, (op, _) in after.nodes.items():
            if key not in before.nodes:
                added[op].append(key)
        return cls(before.op_counts(), after.op_counts(), dict(removed), dict(added), dict(changed))

    def totals(self) -> dict[str, int]:
        return {
            k: sum(len(v) for v in getattr(self, k).values())
            for k in ("removed", "added", "changed")
        }

    def rows(self) -> list[tuple[str, int, int, int, int, int]]:
        """(op type, before, after, removed, added, changed), op types with any change first."""
        ops = set(self.before) | set(self.after)
        rows = [
            (
                op,
                self.before.get(op, 0),
                self.after.get(op, 0),
                len(self.removed.get(op, [])),
                len(self.added.get(op, [])),
                len(self.changed.get(op, [])),
            )
            for op in ops
        ]
        return sorted(rows, key=lambda r: (-(r[3] + r[4] + r[5]), r[0]))


_CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.5em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:2px 6px;font-size:.9em;text-align:right}
th{background:#eee}td.l,th.l{text-align:left}
.ok{color:#176b1b}.bad{color:#b00020;font-weight:bold}.muted{color:#777}
.hist{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
code{background:#f4f4f4;padding:0 2px}
"""


def _status(step: Any) -> str:
    failed = [name for name, o in step.gates.items() if not o.ok]
    if failed:
        return "failed: " + ", ".join(failed)
    if not step.gates:
        return "not gated"
    return "ok"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _pass_table(report: Any) -> str:
    gates: list[str] = []
    for s in report.steps:
        gates.extend(g for g in s.timings if g != "pass" and g not in gates)
    head = [
        "#",
        "pass",
        "numerics",
        "changed",
        "status",
        "nodes before",
        "nodes after",
        "dyn dims before",
        "dyn dims after",
        "pass s",
        *(f"{g} s" for g in gates),
    ]
    out = ["<table class='passes'><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    if report.initial is not None:
        i = report.initial
        out.append(
            f"<tr><td>0</td><td class='l'>(input)</td><td></td><td></td><td></td><td></td><td>{i.nodes}</td>"
            f"<td></td><td>{i.dynamic_dims}</td><td></td>" + "<td></td>" * len(gates) + "</tr>"
        )
    for s in report.steps:
        status = _status(s)
        cls = "ok" if status == "ok" else "bad" if status.startswith("failed") else "muted"
        cells = [
            f"<td>{s.index}</td>",
            f"<td class='l'>{_esc(s.name)}</td>",
            f"<td class='l'>{_esc(s.numerics)}</td>",
            f"<td>{'yes' if s.modified else 'no'}</td>",
            f"<td class='l {cls}'>{_esc(status)}</td>",
            f"<td>{s.before.nodes if s.before else ''}</td>",
            f"<td>{s.after.nodes if s.after else ''}</td>",
            f"<td>{s.before.dynamic_dims if s.before else ''}</td>",
            f"<td>{s.after.dynamic_dims if s.after else ''}</td>",
            f"<td>{_seconds(s.timings.get('pass', s.seconds))}</td>",
            *(f"<td>{_seconds(s.timings.get(g))}</td>" for g in gates),
        ]
        out.append("<tr class='pass-row'>" + "".join(cells) + "</tr>")
    for o in report.final:
        out.append(
            f"<tr><td></td><td class='l'>(end) {_esc(o.gate)}</td><td></td><td></td>"
            f"<td class='l'>{_esc(o.label)}</td>" + "<td></td>" * (5 + len(gates)) + "</tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _dims_chart(report: Any) -> str:
    """Dynamic dims after each pass, one bar a pass (the input first)."""
    points = [("(input)", report.initial.dynamic_dims)] if report.initial is not None else []
    points += [(s.name, s.after.dynamic_dims) for s in report.steps if s.after is not None]
    if not points:
        return "<p class='muted'>no model statistics</p>"
    top = max(v for _, v in points) or 1
    width, bar, height = 40 + 46 * len(points), 30, 120
    parts = [
        f"<svg class='dims' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height + 50}' "
        f"role='img' aria-label='dynamic dims per pass'>"
    ]
    for i, (name, value) in enumerate(points):
        h = int(height * value / top)
        x = 30 + 46 * i
        parts.append(
            f"<rect x='{x}' y='{height - h + 10}' width='{bar}' height='{h}' fill='#4a78b5'>"
            f"<title>{_esc(name)}: {value}</title></rect>"
        )
        parts.append(
            f"<text x='{x + bar / 2}' y='{height + 5}' font-size='11' text-anchor='middle'>{value}</text>"
        )
        parts.append(
            f"<text x='{x + bar / 2}' y='{height + 20}' font-size='9' text-anchor='middle'>"
            f"{_esc(name[:9])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _last_parity(report: Any) -> tuple[str, list[Any]]:
    """The diffs of the last parity check (of the result against the original) and where they come from."""
    for o in reversed(report.final):
        if o.gate == "parity" and o.diffs:
            return "end of the run", list(o.diffs)
    for s in reversed(report.steps):
        outcome = s.gates.get("parity")
        if outcome is not None and outcome.diffs:
            return f"after pass {s.index} ({s.name})", list(outcome.diffs)
    return "", []


def _histogram_svg(diff: Any) -> str:
    from surgery.verify.compare import histogram_labels

    counts = list(diff.histogram or [])
    labels = histogram_labels()
    top = max(counts) or 1
    width, height = 22 * len(counts) + 20, 110
    parts = [
        f"<svg class='histogram' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height + 60}' "
        f"role='img' aria-label='absolute error histogram of {_esc(diff.name)}'>"
    ]
    for i, (count, label) in enumerate(zip(counts, labels, strict=True)):
        h = int(height * count / top) if count else 0
        x = 10 + 22 * i
        fill = "#3c8d40" if i == 0 else "#d08a2e" if i < len(counts) - 1 else "#b00020"
        parts.append(
            f"<rect class='bin' x='{x}' y='{height - h}' width='18' height='{h}' fill='{fill}'>"
            f"<title>{_esc(label)}: {count}</title></rect>"
        )
        parts.append(
            f"<text x='{x + 9}' y='{height + 8}' font-size='8' text-anchor='end' "
            f"transform='rotate(-60 {x + 9} {height + 8})'>{_esc(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _histograms(report: Any) -> str:
    where, diffs = _last_parity(report)
    if not diffs:
        return "<p class='muted'>no parity check ran: no error histogram</p>"
    out = [
        f"<p>absolute error |result - original| of each output, {_esc(where)} (counts of elements per decade)</p>"
    ]
    for d in diffs:
        verdict = "ok" if d.ok else "breaks tolerance"
        numbers = (
            f"max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}, cosine {d.cosine:.6f}"
            if d.problem is None
            else d.problem
        )
        body = (
            _histogram_svg(d)
            if d.histogram
            else "<p class='muted'>not a float output: compared exactly</p>"
        )
        out.append(
            f"<div class='hist'><h3>{_esc(d.name)}</h3><p class='{'ok' if d.ok else 'bad'}'>{_esc(verdict)}: "
            f"{_esc(numbers)}</p>{body}</div>"
        )
    return "\n".join(out)


def _diff_section(diff: GraphDiff | None) -> str:
    if diff is None:
        return "<p class='muted'>no result model (the run failed): no graph diff</p>"
    t = diff.totals()
    out = [
        f"<p class='diff-totals'>nodes removed: <b>{t['removed']}</b>, added: <b>{t['added']}</b>, "
        f"changed: <b>{t['changed']}</b> (before {sum(diff.before.values())}, after {sum(diff.after.values())})</p>",
        "<table class='diff'><tr><th class='l'>op type</th><th>before</th><th>after</th><th>removed</th>"
        "<th>added</th><th>changed</th></tr>",
    ]
    for op, before, after, removed, added, changed in diff.rows():
        out.append(
            f"<tr class='diff-row'><td class='l'>{_esc(op)}</td><td>{before}</td><td>{after}</td>"
            f"<td>{removed}</td><td>{added}</td><td>{changed}</td></tr>"
        )
    out.append("</table>")
    for kind in ("removed", "added", "changed"):
        names = [n for op in sorted(getattr(diff, kind)) for n in getattr(diff, kind)[op]]
        if names:
            more = f" … and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
            items = ", ".join(f"<code>{_esc(n)}</code>" for n in names[:_MAX_NAMES])
            out.append(f"<p>{kind}: {items}{_esc(more)}</p>")
    return "\n".join(out)


def render(
    reports: Sequence[Any],
    *,
    before: GraphSummary | None,
    afters: Sequence[GraphSummary | None],
    labels: Sequence[str] | None = None,
    title: str = "surgery report",
    doctor: Sequence[str] = (),
) -> str:
    """The page for one run (or one per bucket, ``labels`` naming them): a complete HTML document."""
    from surgery.report import _versions

    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ok = all(r.ok for r in reports)
    tool = ", ".join(f"{k} {v}" for k, v in _versions().items())
    out = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p>source <code>{_esc(reports[0].source if reports else '')}</code> · "
        f"<span class='{'ok' if ok else 'bad'}' id='verdict'>{'all gates passed' if ok else 'FAILED'}</span> · "
        f"{_esc(stamp)}</p>",
        f"<p class='muted'>{_esc(tool)}</p>",
    ]
    if doctor:
        out.append(
            "<h2>doctor</h2><ul>" + "".join(f"<li>{_esc(line)}</li>" for line in doctor) + "</ul>"
        )
    for i, report in enumerate(reports):
        label = labels[i] if labels and i < len(labels) else None
        head = f" — bucket {label}" if label else ""
        out.append(f"<section class='run'><h2>passes{_esc(head)}</h2>")
        if report.error:
            out.append(f"<p class='bad'>{_esc(report.error)}</p>")
        out.append(_pass_table(report))
        out.append(f"<h2>dynamic dims per pass{_esc(head)}</h2>" + _dims_chart(report))
        out.append(f"<h2>output error{_esc(head)}</h2>" + _histograms(report))
        after = afters[i] if i < len(afters) else None
        diff = (
            GraphDiff.between(before, after) if before is not None and after is not None else None
        )
        out.append(f"<h2>graph diff{_esc(head)}</h2>" + _diff_section(diff))
        if report.notes:
            out.append(
                "<h3>notes</h3><ul>"
                + "".join(f"<li>{_esc(n)}</li>" for n in report.notes)
                + "</ul>"
            )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"

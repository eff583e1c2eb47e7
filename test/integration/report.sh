# sigma report: a tiny MoE run (with a skipped step and a rollback) renders to one HTML file
# holding every chart as an embedded PNG, plus the PNG files; each PNG is well formed (chunk
# CRCs, inflated size) and not blank, and the summary counts the guard events. A directory
# without metrics.jsonl is a one-line error.
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
SIGMA_FAULTS="nan_loss@3,nan_grad@15x3" "$SIGMA" train recipes/tiny/moe.toml \
  --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]" --set train.steps=30 \
  --set checkpoint.interval=10 --set eval.interval=10 --set train.threads=1 \
  --set log.peak_tflops=1 --set log.expert_load_interval=5 --out "$SCRATCH/run" > /dev/null
"$SIGMA" report "$SCRATCH/run" > "$SCRATCH/report.out"
grep -q "report     $SCRATCH/run/report/report.html" "$SCRATCH/report.out" || die "$(cat "$SCRATCH/report.out")"

python3 - "$SCRATCH/run/report" <<'PY' || die "report check failed"
import base64, os, re, struct, sys, zlib
out = sys.argv[1]
def pixels(png, name):
    assert png[:8] == b"\x89PNG\r\n\x1a\n", f"FAIL: {name}: no PNG signature"
    at, idat, size = 8, b"", None
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        data = png[at + 8:at + 8 + length]
        crc, = struct.unpack(">I", png[at + 8 + length:at + 12 + length])
        assert zlib.crc32(kind + data) == crc, f"FAIL: {name}: bad CRC in {kind}"
        if kind == b"IHDR": size = struct.unpack(">IIBB", data[:10])
        if kind == b"IDAT": idat += data
        at += 12 + length
    w, h, depth, colour = size
    assert depth == 8 and colour == 2, f"FAIL: {name}: {size}"
    raw = zlib.decompress(idat)
    assert len(raw) == h * (1 + 3 * w), f"FAIL: {name}: {len(raw)} bytes for {w}x{h}"
    rows = [raw[y * (1 + 3 * w) + 1:(y + 1) * (1 + 3 * w)] for y in range(h)]
    return w, h, rows
html = open(os.path.join(out, "report.html")).read()
embedded = re.findall(r'<img alt="([a-z_]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', html)
names = [n for n, _ in embedded]
for want in ["loss", "lr", "grad_norm", "tok_per_s", "mfu", "moe_max_dev", "aux_loss",
             "param_norm", "norm_by_depth", "expert_load"]:
    assert want in names, f"FAIL: no {want} chart in the HTML: {names}"
for name, data in embedded:
    png = base64.b64decode(data)
    assert png == open(os.path.join(out, name + ".png"), "rb").read(), f"FAIL: {name} differs"
    w, h, rows = pixels(png, name)
    # Every pixel: a chart of one thin line can fall between the pixels of a sparse grid.
    colours = {bytes(r[i:i + 3]) for r in rows for i in range(0, 3 * w, 3)}
    assert len(colours) > 3, f"FAIL: {name} looks blank"
assert "guard: skipped steps, rollbacks</th><td>4, 1" in html, "FAIL: guard counts in the summary"
assert "guard.rollback" in html, "FAIL: the rollback is not in the events table"
print(f"ok: {len(embedded)} charts embedded and written as valid PNGs")
PY
expect_user_error "metrics.jsonl: cannot be read" "$SIGMA" report "$SCRATCH/data.bin"

#!/bin/bash
# The LSTM's streaming forward pass against an independent reference:
# test-lstm --export writes a tiny 2-layer model, an input sequence and the
# library's outputs; PyTorch's nn.LSTM (Debian's python3-torch) recomputes
# them from the same weights.
. "$(dirname "$0")/lib.sh"

unit=${IPKIT_UNIT:-$IPKIT_TOP/build/san/unit}
[ -x "$unit/test-lstm" ] || skip_all "needs $unit/test-lstm (make unit)"
py=/usr/bin/python3
[ -x "$py" ] && "$py" -c 'import torch' 2>/dev/null || skip_all "needs python3-torch (Debian) for /usr/bin/python3"

check "export a tiny model" "$unit/test-lstm" --export "$TMP/model.txt"

cat >"$TMP/ref.py" <<'PY'
import sys
import torch
vals = open(sys.argv[1]).read().split()
pos = 0
def take(n, conv=float):
    global pos
    out = [conv(v) for v in vals[pos:pos + n]]
    pos += n
    return out
nin, H, L, nout = take(4, int)
npar = take(1, int)[0]
p = torch.tensor(take(npar), dtype=torch.float64)
T = take(1, int)[0]
x = torch.tensor(take(T * nin), dtype=torch.float64).reshape(1, T, nin)
c_out = torch.tensor(take(T * nout), dtype=torch.float64).reshape(T, nout)
lstm = torch.nn.LSTM(nin, H, num_layers=L, batch_first=True).double()
off = 0
with torch.no_grad():
    for l in range(L):
        n_l = nin if l == 0 else H
        for name, shape in (("weight_ih", (4 * H, n_l)), ("weight_hh", (4 * H, H))):
            k = shape[0] * shape[1]
            getattr(lstm, "%s_l%d" % (name, l)).copy_(p[off:off + k].reshape(shape))
            off += k
        getattr(lstm, "bias_ih_l%d" % l).copy_(p[off:off + 4 * H])
        getattr(lstm, "bias_hh_l%d" % l).zero_()
        off += 4 * H
    w = p[off:off + nout * H].reshape(nout, H)
    b = p[off + nout * H:off + nout * H + nout]
    assert off + nout * H + nout == npar
    h, _ = lstm(x)
    ref = torch.sigmoid(h[0] @ w.T + b)
d = (ref - c_out).abs().max().item()
spread = (ref.max() - ref.min()).item()
print("%.3g %.3g" % (d, spread))
PY
if out=$("$py" "$TMP/ref.py" "$TMP/model.txt" 2>"$TMP/py.err"); then
	read -r diff spread <<<"$out"
	echo "max abs difference to torch.nn.LSTM: $diff (output spread $spread)" >&2
	if awk -v d="$diff" 'BEGIN { exit !(d < 1e-5) }'; then ok "forward pass equals torch.nn.LSTM (1e-5)"; else fail "forward pass equals torch.nn.LSTM (1e-5)" "max abs difference $diff"; fi
	if awk -v s="$spread" 'BEGIN { exit !(s > 0.05) }'; then ok "reference outputs vary"; else fail "reference outputs vary" "spread $spread"; fi
else
	fail "forward pass equals torch.nn.LSTM (1e-5)" "python failed: $(tail -c 300 "$TMP/py.err")"
fi

"""Baseline for `cargo xtask bench crypto`: the mesh-crypto composition done by libsodium (PyNaCl).

Same operations, sizes and budget as benches/src/crypto.rs; prints JSON like mesh-bench --json.
The Python call overhead (~1 µs per libsodium call) is part of this baseline and matters only
for the small operations; see docs/BENCHMARKS.md.
"""

import json
import sys
import time

import meshsodium as m

CONTEXT = b"mesh/message"


def measure(name, nbytes, budget, op):
    start, calib = time.perf_counter(), 0
    while time.perf_counter() - start < budget / 20 or calib < 2:
        op()
        calib += 1
    per_op = (time.perf_counter() - start) / calib
    batch = max(1, int(-(-(budget / 10) // per_op)))
    samples = []
    for _ in range(10):
        t = time.perf_counter()
        for _ in range(batch):
            op()
        samples.append((time.perf_counter() - t) * 1e9 / batch)
    samples.sort()
    return {"name": name, "ns_per_op": samples[len(samples) // 2], "iterations": batch * 10, "bytes_per_op": nbytes}


def main():
    quick = "--quick" in sys.argv
    budget = 0.02 if quick else 1.0
    apk, ask, _, _ = m.keypair(bytes([1]) * 32)
    bpk, _, _, bxsk = m.keypair(bytes([2]) * 32)
    results = []
    for label, size in (("1 KiB", 1024), ("1 MiB", 1024 * 1024)):
        pt = bytes([0x42]) * size
        sealed = m.seal(ask, apk, bpk, CONTEXT, pt, m.s.randombytes(32), m.s.randombytes(24))
        results.append(measure("seal " + label, size, budget,
                               lambda: m.seal(ask, apk, bpk, CONTEXT, pt, m.s.randombytes(32), m.s.randombytes(24))))
        results.append(measure("open " + label, size, budget, lambda: m.open_envelope(bpk, bxsk, CONTEXT, sealed)))
    msg = bytes([7]) * 1024
    sig = m.sign_digest(ask, m.domain_hash("mesh/bench/v1", msg))
    results.append(measure("sign 1 KiB", 1024, budget, lambda: m.sign_digest(ask, m.domain_hash("mesh/bench/v1", msg))))
    results.append(measure("verify 1 KiB", 1024, budget,
                           lambda: m.verify_digest(apk, m.domain_hash("mesh/bench/v1", msg), sig)))
    impl = "libsodium via PyNaCl " + __import__("nacl").__version__
    json.dump({"suite": "crypto", "implementation": impl, "quick": quick, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()

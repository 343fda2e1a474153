"""Allocates far more memory than the job asked for, touching every page."""
import sys

gib = float(sys.argv[1]) if len(sys.argv) > 1 else 3
print(f"allocating {gib} GiB", flush=True)
blocks = []
for _ in range(int(gib * 16)):
    blocks.append(b"x" * (64 << 20))
print("allocated without being stopped", flush=True)

"""Leaves background processes behind (double-forked, in a new session), then sleeps."""
import os, subprocess, sys, time

for _ in range(2):
    subprocess.Popen(["sh", "-c", "setsid sleep 1000 &"])
time.sleep(1)
print("children started", flush=True)
time.sleep(1000)

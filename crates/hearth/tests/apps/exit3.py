import sys
print("failing on purpose", flush=True)
sys.exit(3)

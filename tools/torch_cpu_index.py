"""Print pip arguments that select a CPU-only build of torch, when the PyTorch CPU index is reachable.

Used by the Makefile on machines without an NVIDIA GPU, so a fresh set-up never pulls the
multi-GB CUDA build. Prints nothing when the index cannot be reached (then the registry's own
build is used; on machines that mirror a CPU wheel locally that is the CPU build).
"""

import urllib.request

URL = "https://download.pytorch.org/whl/cpu/torch/"
try:
    urllib.request.urlopen(URL, timeout=4).close()
    print(f"--index-url {URL.rsplit('/torch/', 1)[0]}")
except Exception:
    pass

"""serve-bench: verified latency and throughput of each deployment backend.

``config`` (what to measure), ``workload`` (input images, tiling), ``timing`` (warm-up, closed-loop
timing, percentiles), ``flops`` (model cost and the machine's measured peak), ``machine`` (CPU/GPU,
versions, memory), ``runner`` (verify, then time, every configuration), ``report`` (table, JSON,
chart) and ``schema`` (the versioned JSON schema and its checker). Conventions follow trtexec and
Polygraphy: warm up by time and iterations, percentiles not just means, GPU compute apart from
end-to-end latency, exact versions and command recorded.
"""

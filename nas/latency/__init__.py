"""Latency on the target device: the measurement protocol, the persistent cache, and the predictor."""

from nas.latency.cache import LatencyCache, cache_dir, device_lock, fingerprint
from nas.latency.measure import (
                                 CAREFUL,
                                 RUNTIMES,
                                 LatencyRecord,
                                 check_runtime,
                                 measure_arch,
                                 measure_arch_file,
                                 measure_interleaved,
                                 measure_latency,
                                 measurement_key,
                                 parse_budget,
                                 resolve_device,
)

__all__ = ["CAREFUL", "RUNTIMES", "LatencyCache", "LatencyRecord", "cache_dir", "check_runtime", "device_lock",
           "fingerprint", "measure_arch", "measure_arch_file", "measure_interleaved",
           "measure_latency", "measurement_key", "parse_budget", "resolve_device"]

"""Machine-load helpers shared by the benchmark drivers (standard library only): the busy share of
all CPUs from /proc/stat, and a bounded wait for an idle machine."""
import time


def cpu_jiffies():
    """(busy, total) jiffies over all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy, total


def wait_idle(budget_s, max_busy=0.10, window_s=1.0):
    """Waits until a window shows < max_busy of all CPUs in use, at most budget_s; returns s waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s:
        b0, t0 = cpu_jiffies()
        time.sleep(window_s)
        b1, t1 = cpu_jiffies()
        if (b1 - b0) / max(t1 - t0, 1) < max_busy:
            break
    return time.perf_counter() - start

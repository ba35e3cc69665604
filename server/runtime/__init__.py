"""The process itself: the event loop, task shutdown, memory trimming, Prometheus metrics.
"""

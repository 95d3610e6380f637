"""Request budgets: what a request will cost in the worst case, known and bounded before any CPU or
GPU time is spent on it (cost.py). Plain modules: no Flask, gevent or torch."""

"""Admission: how much synthesis is queued on each model worker, and whether a new request gets in.

`estimate` is the model worker's side (its measured cost of work and the wait a newcomer faces);
`rules` is the front worker's side (which worker takes a job, or a 429 with its Retry-After).
Both are plain modules: no Flask, gevent or torch.
"""

"""What a speech request means, without HTTP: parameter rules, voices, the cost budget, take selection, long jobs
and the calls that turn a request into audio."""

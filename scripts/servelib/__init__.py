"""UGRO's own inference server: a base model with jobs' LoRA adapters behind an OpenAI-shaped API.

`spec` (what to serve, read from the deployment's spec.json), `models` (the base, its adapters as
named peft adapters, the tokenizer), `sampling` (greedy, temperature and top-p, seeded per
choice; stop strings), `engine` (one thread that batches every waiting request, whatever its
adapter, into one decoding loop), `openai` (requests checked and answers shaped as OpenAI's
clients expect), `app` (Starlette: routes, the key, the limits, server-sent events), `stats`
(requests, latency percentiles, tokens/s).
"""

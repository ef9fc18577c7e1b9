"""Serving engines: request, KV block manager, scheduler, worker and engine compositions.

Nothing here imports torch except the `engines.torch` subpackage (the real executor).
"""

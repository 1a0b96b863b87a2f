"""`nima serve`: an OpenAI-compatible HTTP server over the torch-free runtime, with continuous batching.

`scheduler.Scheduler` decodes every client's rows in one batch (`batch.RunningBatch`), `service.Service`
turns requests into checked jobs, `app.create_app` is the FastAPI app. docs/serve.md describes it.
"""

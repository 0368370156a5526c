"""Applications built on the library: the benchmark, the Gradio Space and community contributions."""

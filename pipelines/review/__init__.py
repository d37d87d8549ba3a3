"""Pull-request review: the metric gate, its Markdown report, and the comment client."""

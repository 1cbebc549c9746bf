"""Reply suggestions: script library (话术库), pool, retrieval, ranking and the compliance guard."""

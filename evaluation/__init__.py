"""`travelbot eval`: how well a deployment reads and explains travellers' photos, in numbers.

The generated photo set (photoset), its scores (score), the runners that answer it (an
in-process engine, an OpenAI-compatible endpoint, a classical OCR baseline: runners) and
the report (report). It may import both `bot` (fonts, settings) and `inference`; neither
imports it.
"""

"""Plumbing every layer uses: atomic output folders (`atomic`), silenced and offline library calls (`quiet`), the
terminal's progress lines (`progress`) and the Jinja2 templates (`templating`)."""

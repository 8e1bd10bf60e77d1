"""`genpipe report`: one static HTML page per root, for the people who operate its models.

`facts` reads what ML Metadata, the root's folders and the schedules recorded (`pipeline.status`
is the shared reader), `samples` collects what each live version generates (asked of a model
server, or the samples the pipeline already wrote), `plots` draws metrics across versions with
matplotlib, and `page` renders `templates/report.html` with Jinja2 (autoescaped) and writes it.
"""

"""fer-pipeline: reproducible video facial-expression recognition pipelines.

A clip's journey is one straight line: manifest row -> decoded frames -> faces -> aligned crops -> flow ->
dynamic images -> feature store -> windows -> model -> predictions -> table. Each step is a module here.
"""

__version__ = "0.1.0"

"""The framework-free HTTP core of `submit` (`submit`) and `sweep` (`sweep`): routing on plain
request objects (`http`), problem+json (`problems`), token verification (`auth`), the API's
own models (`models`) and the OpenAPI document built from them (`openapi`).

May import: `store`, `presets`, `messaging`, `service`, `maintenance` and the top level.
Never `worker`: the API does not run jobs.
"""

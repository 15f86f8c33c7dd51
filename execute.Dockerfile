# The image of long jobs' executions (issue 29; infra/long_jobs.tf): the functions' own source
# (what .gcloudignore lets through) and pinned requirements, run as
# `python -m common.worker.execute JOB_ID ATTEMPT` (the arguments come with each execution).
# Built and deployed by cloudbuild.yaml's execution-image and execution-job steps.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
USER nobody
ENTRYPOINT ["python"]
CMD ["-m", "common.worker.execute"]

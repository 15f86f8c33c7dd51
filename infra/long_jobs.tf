# Long jobs (issue 29, docs/worker.md): a Cloud Run job whose executions each run one attempt of
# a long preset's job. `process` claims the job, then starts an execution with the Admin API's
# jobs.run, overriding the arguments with the job id and the attempt; the execution runs
# `python -m common.worker.execute JOB_ID ATTEMPT` with the same settings as process, as process's
# own service account (the same database login, grants and secret), through the Python Cloud SQL
# connector as the functions do.
#
# No task retries (max_retries = 0): our lease and attempts own retries. An execution that dies
# stops heartbeating, its lease lapses, and the sweep rescues the job to its next attempt (and
# cancels the execution, if it is only wedged). The task timeout leaves 10 minutes past
# LONG_JOB_MAX_S for writing the outcome.
#
# The image is built from the same source by cloudbuild.yaml (execute.Dockerfile) and deployed
# to this job by its `execution-job` step: Terraform creates the job with Google's sample image
# and leaves the image to the build, as it leaves the functions' source.

locals {
  long_job_env = merge(local.common_env, local.fn["process"].env, {
    DB_USER = local.db_users["process"]
  })
}

resource "google_cloud_run_v2_job" "execute" {
  name                = "${var.name}-execute"
  location            = var.region
  deletion_protection = false # it holds no data: its executions write to the database

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.function["process"].email
      timeout         = "${var.long_job_max_s + 600}s"
      max_retries     = 0

      containers {
        image   = var.long_job_image
        command = ["python"]
        args    = ["-m", "common.worker.execute"]

        resources {
          limits = {
            cpu    = var.long_job_cpu
            memory = var.long_job_memory
          }
        }

        dynamic "env" {
          for_each = local.long_job_env
          content {
            name  = env.key
            value = env.value
          }
        }

        env {
          name = "WEBHOOK_SECRET_KEY"
          value_source {
            secret_key_ref {
              secret  = data.google_secret_manager_secret.webhook_key.secret_id
              version = var.webhook_key_secret_version
            }
          }
        }
      }

      dynamic "vpc_access" {
        for_each = var.vpc_connector != "" ? [var.vpc_connector] : []
        content {
          connector = vpc_access.value
          egress    = "PRIVATE_RANGES_ONLY"
        }
      }
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.webhook_key_reader,
    google_project_service.api,
  ]

  lifecycle {
    # cloudbuild.yaml deploys each new image (gcloud run jobs update --image).
    ignore_changes = [template[0].template[0].containers[0].image]
  }
}

# On this job only, nothing else in Cloud Run (docs/deploy.md cites Google's pages):
# - process starts executions with its arguments overridden: jobs.run needs run.jobs.run, and
#   run.jobs.runWithOverrides for the overrides. roles/run.invoker grants the first only; the
#   narrowest predefined role with both is roles/run.jobsExecutorWithOverrides ("execute and
#   cancel with overrides"), far short of roles/run.developer (which can also update the job).
# - the sweep cancels a rescued attempt's execution: executions.cancel needs
#   run.executions.cancel (run.jobs.run before 2024-09-16). roles/run.jobsExecutor ("execute and
#   cancel") has it without overrides: a start the sweep made would run nothing (no arguments).
resource "google_cloud_run_v2_job_iam_member" "starts_executions" {
  for_each = {
    process = "roles/run.jobsExecutorWithOverrides"
    sweep   = "roles/run.jobsExecutor"
  }
  project  = var.project_id
  location = google_cloud_run_v2_job.execute.location
  name     = google_cloud_run_v2_job.execute.name
  role     = each.value
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# The build deploys each new image to the job (it already acts as process's account:
# migrate_acts_as_functions).
resource "google_cloud_run_v2_job_iam_member" "build_deploys_job" {
  project  = var.project_id
  location = google_cloud_run_v2_job.execute.location
  name     = google_cloud_run_v2_job.execute.name
  role     = "roles/run.developer"
  member   = "serviceAccount:${google_service_account.migrate.email}"
}

resource "google_artifact_registry_repository_iam_member" "build_pushes_execution_image" {
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.migrate.email}"
}

# What cloudbuild.yaml needs to know about this deployment, in one place: the trigger below
# passes it as a map, and `terraform output -raw build_substitutions` prints it for
# `gcloud builds submit --substitutions=...` (docs/deploy.md, step 6).
#
# gcloud splits a dict flag on commas: _DB_APP_USERS is a comma-separated list, so the flag uses
# gcloud's alternate delimiter (`gcloud topic escaping`): "^;^K=V;K=V". Not '@': the database
# users are service-account emails without their domain, and hold '@'.
locals {
  build_substitutions = {
    _REGION       = var.region
    _NAME         = var.name
    _INSTANCE     = google_sql_database_instance.jobs.connection_name
    _DB_IP_TYPE   = var.db_private_ip ? "PRIVATE" : "PUBLIC"
    _DB_APP_USERS = join(",", values(local.db_users))
  }
  build_substitutions_flag = "^;^${join(";", [for k, v in local.build_substitutions : "${k}=${v}"])}"
}

# A build on every push to build_branch, with the substitutions above, running as the pipeline's
# account. Optional: it needs a Cloud Build (2nd gen) repository connected once by hand in the
# console (GitHub/GitLab authorization); pass its resource name as build_repository.
resource "google_cloudbuild_trigger" "deploy" {
  count           = var.build_repository != "" ? 1 : 0
  name            = "${var.name}-deploy"
  location        = var.region
  description     = "Migrate and deploy the jobs pipeline (cloudbuild.yaml) on every push to ${var.build_branch}"
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.migrate.id
  substitutions   = local.build_substitutions

  repository_event_config {
    repository = var.build_repository
    push {
      branch = var.build_branch
    }
  }

  depends_on = [google_project_service.api]

  lifecycle {
    precondition {
      # A private-IP instance is reachable only from a private worker pool, which a build
      # started by a trigger takes from the config file, not from the trigger: use
      # `gcloud builds submit --worker-pool=...` for that path (docs/deploy.md).
      condition     = !var.db_private_ip
      error_message = "The build trigger supports the public-IP path only; with db_private_ip run cloudbuild.yaml with `gcloud builds submit --worker-pool=...` (docs/deploy.md)."
    }
  }
}

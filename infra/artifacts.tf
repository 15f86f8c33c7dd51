# The functions' images: built into this repository (build_config.docker_repository, and
# --docker-repository in cloudbuild.yaml) rather than the gcf-artifacts repository the Cloud
# Functions API would create without a cleanup policy. Every deploy adds an image per function;
# the policy keeps the newest images_kept versions of each (KEEP wins over DELETE) and deletes
# the rest once older than image_max_age_days. A running revision keeps serving when an old
# image goes; only rolling back to a revision whose image was deleted needs a redeploy.
resource "google_artifact_registry_repository" "functions" {
  # checkov:skip=CKV_GCP_84: the images hold only this repository's public source and pinned
  # public packages; Google-managed encryption suffices, a customer-managed key is a deployment's choice.
  location      = var.region
  repository_id = "${var.name}-functions"
  description   = "Images of the jobs pipeline's functions (submit, process, sweep)"
  format        = "DOCKER"

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.images_kept
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${var.image_max_age_days * 86400}s"
    }
  }

  depends_on = [google_project_service.api]
}

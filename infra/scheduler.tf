# Cloud Scheduler calls sweep with an OIDC token of its own service account; sweep checks the
# token's audience and that its email is in SWEEP_ALLOWED_INVOKERS.
resource "google_cloud_scheduler_job" "sweep" {
  name             = "${var.name}-sweep"
  region           = var.region
  schedule         = var.sweep_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${var.sweep_timeout_s + 20}s"

  retry_config {
    retry_count = 0 # the next scheduled pass is the retry
  }

  http_target {
    http_method = "POST"
    uri         = local.url["sweep"]
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode("{}")
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.url["sweep"]
    }
  }
}

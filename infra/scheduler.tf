# Cloud Scheduler calls sweep with an OIDC token of its own service account; sweep checks the
# token's audience and that its email is in SWEEP_ALLOWED_INVOKERS.
#
# sweep's ingress is internal-only, and Cloud Run counts Cloud Scheduler (same project) as
# internal only when it calls the default run.app URL, so the target is service_config[0].uri,
# not the cloudfunctions.net URL. The token's audience stays the function URL (local.url), the
# value sweep's own SWEEP_AUDIENCE holds: a function cannot name its own run.app URL in its
# environment (it exists only once the function does), and Cloud Run accepts the function URL as
# an audience for a function created with the Cloud Functions v2 API.
#
# Until the first migration has run, sweep answers 200 {"ok": true, "skipped": "schema-missing"}
# (one WARNING line), so the job shows no failures between `terraform apply` and the first build.
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
    uri         = google_cloudfunctions2_function.fn["sweep"].service_config[0].uri
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode("{}")
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.url["sweep"]
    }
  }

  depends_on = [google_cloud_run_service_iam_member.sweep_invoker]
}

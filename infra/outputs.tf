output "submit_url" {
  description = "Where callers send POST /jobs."
  value       = local.url["submit"]
}

output "sweep_url" {
  description = "The run.app URL Cloud Scheduler calls (internal-only ingress accepts it)."
  value       = google_cloudfunctions2_function.fn["sweep"].service_config[0].uri
}

output "submit_audience" {
  description = "The audience of ID tokens for submit (also submit_url)."
  value       = local.url["submit"]
}

output "caller_service_account" {
  description = "Impersonate this account to call submit (docs/deploy.md, Try it)."
  value       = google_service_account.caller.email
}

output "process_url" {
  value = google_cloudfunctions2_function.fn["process"].service_config[0].uri
}

output "instance_connection_name" {
  description = "For INSTANCE_CONNECTION_NAME (migrations, psql through the connector)."
  value       = google_sql_database_instance.jobs.connection_name
}

output "jobs_topic" {
  value = google_pubsub_topic.jobs.name
}

output "results_topic" {
  description = "Subscribe here to hear of every job's end."
  value       = google_pubsub_topic.results.name
}

output "dead_letter_subscription" {
  value = google_pubsub_subscription.dead_letters.name
}

output "hs256_secret" {
  description = "The HS256 secret (created with gcloud before apply; rotate by adding a version)."
  value       = data.google_secret_manager_secret.hs256.secret_id
}

output "db_admin_password_secret" {
  description = "The postgres user's password (created with gcloud before apply; docs/deploy.md)."
  value       = data.google_secret_manager_secret.db_admin_password.secret_id
}

output "service_accounts" {
  value = merge(
    { for f in local.functions : f => google_service_account.function[f].email },
    {
      scheduler = google_service_account.scheduler.email
      push      = google_service_account.push.email
      migrate   = google_service_account.migrate.email
      build     = google_service_account.build.email
      caller    = google_service_account.caller.email
    },
  )
}

output "db_users" {
  description = "IAM database users the migration grants jobs_app to (DB_APP_USERS)."
  value       = join(",", values(local.db_users))
}

output "db_ip_type" {
  description = "DB_IP_TYPE of the functions and of the migration step (_DB_IP_TYPE)."
  value       = local.build_substitutions._DB_IP_TYPE
}

output "build_substitutions" {
  description = "The whole --substitutions value for `gcloud builds submit` (gcloud's ^;^ delimiter: _DB_APP_USERS holds commas)."
  value       = local.build_substitutions_flag
}

output "dashboard" {
  description = "The Cloud Monitoring dashboard."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${element(split("/", google_monitoring_dashboard.pipeline.id), length(split("/", google_monitoring_dashboard.pipeline.id)) - 1)}?project=${var.project_id}"
}

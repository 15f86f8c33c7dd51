output "submit_url" {
  description = "Where callers send POST /jobs."
  value       = local.url["submit"]
}

output "sweep_url" {
  value = local.url["sweep"]
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
  description = "Add the HS256 secret's value as a version of this secret."
  value       = google_secret_manager_secret.hs256.secret_id
}

output "db_admin_password_secret" {
  description = "Put the postgres user's password here (docs/deploy.md)."
  value       = google_secret_manager_secret.db_admin_password.secret_id
}

output "service_accounts" {
  value = merge(
    { for f in local.functions : f => google_service_account.function[f].email },
    {
      scheduler = google_service_account.scheduler.email
      push      = google_service_account.push.email
      migrate   = google_service_account.migrate.email
    },
  )
}

output "db_users" {
  description = "IAM database users the migration grants jobs_app to (DB_APP_USERS)."
  value       = join(",", values(local.db_users))
}

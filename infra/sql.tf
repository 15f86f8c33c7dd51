resource "google_sql_database_instance" "jobs" {
  # checkov:skip=CKV_GCP_79: PostgreSQL 15 is what the test suite runs against; move to a newer
  # major version after running the suite on it (Cloud SQL upgrades in place).
  # checkov:skip=CKV_GCP_60: the public address admits only the Cloud SQL connector (client
  # certificates required, no authorized networks); set db_private_ip = true to drop it.
  # checkov:skip=CKV2_GCP_13: log_duration writes a line per statement, at job rates a large
  # Cloud Logging bill; Query Insights (below) keeps statement latencies instead.
  name             = "${var.name}-db"
  database_version = "POSTGRES_15"
  region           = var.region
  # Terraform's own guard (terraform destroy / replacement refuses) ...
  deletion_protection = var.deletion_protection

  depends_on = [google_project_service.api]

  settings {
    tier              = var.db_tier
    availability_type = var.db_availability_type
    edition           = "ENTERPRISE"
    # ... and the API-level one: no surface (console, gcloud, API) deletes the instance until it
    # is switched off.
    deletion_protection_enabled = var.deletion_protection

    # The disk grows by itself, up to a limit: a runaway table must not grow the bill forever.
    disk_autoresize       = true
    disk_autoresize_limit = var.db_disk_autoresize_limit_gb

    # Updates restart the instance (seconds with REGIONAL): pick the quietest hour, UTC.
    maintenance_window {
      day          = var.db_maintenance_window.day
      hour         = var.db_maintenance_window.hour
      update_track = "stable"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = 14
      }
    }

    ip_configuration {
      # The functions and Cloud Build reach it through the Cloud SQL connector (mTLS, IAM), so
      # no address is ever allow-listed. With db_private_ip it has no public address at all.
      ipv4_enabled                                  = !var.db_private_ip
      private_network                               = var.db_private_ip ? var.db_network : null
      ssl_mode                                      = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
      enable_private_path_for_google_cloud_services = var.db_private_ip
    }

    database_flags {
      name  = "max_connections"
      value = tostring(var.db_max_connections)
    }
    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      # Never log statement text: job content travels in statement parameters.
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }
  }
}

resource "google_sql_database" "jobs" {
  name     = "jobs"
  instance = google_sql_database_instance.jobs.name
}

# IAM database users, one per function; they log in without passwords and get the jobs_app
# role (DML only) from `python main.py migrate`. The migrations run as the built-in postgres
# user, whose password lives in Secret Manager (see docs/deploy.md), so the tables have one owner.
resource "google_sql_user" "function" {
  for_each = local.functions
  name     = local.db_users[each.key]
  instance = google_sql_database_instance.jobs.name
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}

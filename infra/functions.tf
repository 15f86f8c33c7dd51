# The three functions, from one source archive, each with its own service account.
#
# Connection budget: every instance holds at most pool + overflow connections, so
#   (max_instances.submit + max_instances.process + max_instances.sweep) x (pool + overflow)
#   must stay <= db_max_connections - db_reserved_connections.
# Defaults: (10 + 20 + 1) x (2 + 1) = 93 <= 100 - 7. The precondition below refuses a plan that
# breaks it; raise db_max_connections (and the tier) before max instances or pools.

locals {
  per_instance_connections = var.db_pool_size + var.db_max_overflow
  connection_budget        = var.db_max_connections - var.db_reserved_connections
  connections_needed = local.per_instance_connections * (
    var.max_instances.submit + var.max_instances.process + var.max_instances.sweep
  )
  url = { for f in local.functions : f => "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.name}-${f}" }

  common_env = {
    INSTANCE_CONNECTION_NAME = google_sql_database_instance.jobs.connection_name
    DB_NAME                  = google_sql_database.jobs.name
    DB_IAM_AUTH              = "true"
    DB_IP_TYPE               = var.db_private_ip ? "PRIVATE" : "PUBLIC"
    DB_POOL_SIZE             = tostring(var.db_pool_size)
    DB_MAX_OVERFLOW          = tostring(var.db_max_overflow)
    GOOGLE_CLOUD_PROJECT     = var.project_id
    JOBS_TOPIC               = google_pubsub_topic.jobs.name
    RESULTS_TOPIC            = google_pubsub_topic.results.name
    ACK_DEADLINE_S           = tostring(var.ack_deadline_s)
  }

  fn = {
    submit = {
      timeout = 60
      memory  = "512Mi"
      env = {
        AUTH_GOOGLE_AUDIENCE = local.url["submit"]
        # On Cloud Run, HS256 tokens must name this issuer and audience (settings refuse a
        # secret without them): mint with `python main.py token` given the same two values.
        AUTH_HS256_ISSUER   = "${var.name}-callers"
        AUTH_HS256_AUDIENCE = local.url["submit"]
      }
      # The public API: still private by IAM unless allow_public_submit.
      ingress = "ALLOW_ALL"
    }
    process = {
      # Equal to the push subscription's ack deadline: the handler's limit is cut below it.
      timeout = var.ack_deadline_s
      memory  = "1Gi"
      env     = {}
      # Pub/Sub push from the same project counts as internal traffic.
      ingress = "ALLOW_INTERNAL_ONLY"
    }
    sweep = {
      timeout = var.sweep_timeout_s
      memory  = "512Mi"
      env = {
        SWEEP_AUDIENCE           = local.url["sweep"]
        SWEEP_ALLOWED_INVOKERS   = jsonencode([google_service_account.scheduler.email])
        SWEEP_TIME_BUDGET_S      = tostring(var.sweep_time_budget_s)
        RETENTION_DAYS           = tostring(var.retention_days)
        DEAD_LETTER_SUBSCRIPTION = google_pubsub_subscription.dead_letters.name
        REDISPATCH_AFTER_S       = tostring(max(1800, 2 * var.ack_deadline_s))
      }
      # Cloud Scheduler in the same project counts as internal traffic.
      ingress = "ALLOW_INTERNAL_ONLY"
    }
  }
}

resource "google_cloudfunctions2_function" "fn" {
  # checkov:skip=CKV_GCP_124: ingress is set per function in local.fn: internal-only for process
  # and sweep; submit is the public API, callable only by IAM invokers unless allow_public_submit.
  for_each = local.functions
  name     = "${var.name}-${each.key}"
  location = var.region

  build_config {
    runtime     = "python311"
    entry_point = each.key
    source {
      storage_source {
        bucket = var.source_bucket
        object = var.source_object
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.function[each.key].email
    max_instance_count               = var.max_instances[each.key]
    min_instance_count               = 0
    max_instance_request_concurrency = var.concurrency[each.key]
    available_cpu                    = "1"
    available_memory                 = local.fn[each.key].memory
    timeout_seconds                  = local.fn[each.key].timeout
    ingress_settings                 = local.fn[each.key].ingress
    all_traffic_on_latest_revision   = true
    vpc_connector                    = var.vpc_connector != "" ? var.vpc_connector : null
    vpc_connector_egress_settings    = var.vpc_connector != "" ? "PRIVATE_RANGES_ONLY" : null
    environment_variables = merge(local.common_env, local.fn[each.key].env, {
      DB_USER = local.db_users[each.key]
    })

    dynamic "secret_environment_variables" {
      for_each = each.key == "submit" ? [1] : []
      content {
        key        = "AUTH_HS256_SECRET"
        project_id = var.project_id
        secret     = google_secret_manager_secret.hs256.secret_id
        version    = "latest"
      }
    }
  }

  lifecycle {
    # Terraform creates the functions; cloudbuild.yaml deploys each new version of the code
    # (gcloud functions deploy --source), so the source is not Terraform's to roll back.
    ignore_changes = [build_config[0].source]
    precondition {
      condition     = local.connections_needed <= local.connection_budget
      error_message = "max_instances x (db_pool_size + db_max_overflow) exceeds db_max_connections - db_reserved_connections."
    }
    precondition {
      condition     = var.sweep_time_budget_s < var.sweep_timeout_s
      error_message = "sweep_time_budget_s must be shorter than sweep_timeout_s."
    }
    precondition {
      condition     = var.ack_deadline_s >= 10 && var.ack_deadline_s <= 600
      error_message = "ack_deadline_s must be within Pub/Sub's 10..600 seconds."
    }
  }
}

# The three functions, from one source archive, each with its own service account.
#
# Connection budget: every instance holds at most pool + overflow connections, so
#   (max_instances.submit + max_instances.process + max_instances.sweep) x (pool + overflow)
#   must stay <= db_max_connections - db_reserved_connections.
# Cloud Run may briefly exceed max instances (spikes, a deploy's two revisions), so the sum is
# taken with instance_overshoot_ratio (20 %) on top. Defaults: (10 + 20 + 1) x (2 + 1) = 93, with
# headroom ceil(93 x 1.2) = 112 <= 125 - 7 = 118. The precondition below refuses a plan that
# breaks it; raise db_max_connections (and the tier) before max instances or pools.
# Request concurrency does not multiply connections: an instance's pool caps them whatever the
# number of requests it serves at once.
#
# sweep: concurrency 2 on its single instance, so a Scheduler call that overlaps a running pass
# reaches the code, finds the pass's advisory lock taken and answers 200 "another-pass-running"
# instead of a 429 from Cloud Run. A pass holds one pooled connection for its lock and one for
# its work, and each overlapping call needs one to try the lock, so the sweep's pool must hold
# concurrency.sweep + 1 connections (3 with the defaults: 2 + 1 = 3). A precondition checks that.

locals {
  per_instance_connections = var.db_pool_size + var.db_max_overflow
  connection_budget        = var.db_max_connections - var.db_reserved_connections
  connections_needed = local.per_instance_connections * (
    var.max_instances.submit + var.max_instances.process + var.max_instances.sweep
  )
  # Cloud Run may briefly run more instances than max_instances (spikes, and a deploy's old and
  # new revisions side by side): the budget must hold that overshoot too.
  connections_with_headroom = ceil(local.connections_needed * (1 + var.instance_overshoot_ratio))
  # The function URLs (cloudfunctions.net): the OIDC audiences that callers put in their ID
  # tokens and that submit and sweep check. Known before the functions exist, so the functions'
  # own environment can name them. Targets of internal-only functions use the run.app URL instead
  # (service_config[0].uri): only there do Scheduler and Pub/Sub push count as internal traffic.
  # The audience of IAP's signed header when IAP is enabled on submit's Cloud Run service.
  iap_audience = "/projects/${data.google_project.this.number}/locations/${var.region}/services/${var.name}-submit"
  url          = { for f in local.functions : f => "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.name}-${f}" }

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
    # Long jobs (infra/long_jobs.tf): process starts executions of this job, the sweep cancels
    # a rescued attempt's, submit checks long presets' limits against LONG_JOB_MAX_S.
    LONG_JOB_EXECUTOR = "cloud-run"
    CLOUD_RUN_JOB     = "${var.name}-execute"
    CLOUD_RUN_REGION  = var.region
    LONG_JOB_MAX_S    = tostring(var.long_job_max_s)
  }

  # Secret environment variables of each function: name => secret (at a pinned version), from
  # secrets.tf. Each reader is granted access in iam.tf, and the functions wait for the grants.
  secret_version = {
    (data.google_secret_manager_secret.hs256.secret_id)       = var.hs256_secret_version
    (data.google_secret_manager_secret.webhook_key.secret_id) = var.webhook_key_secret_version
  }
  secret_env = {
    submit = {
      AUTH_HS256_SECRET  = data.google_secret_manager_secret.hs256.secret_id
      WEBHOOK_SECRET_KEY = data.google_secret_manager_secret.webhook_key.secret_id
    }
    process = { WEBHOOK_SECRET_KEY = data.google_secret_manager_secret.webhook_key.secret_id }
    sweep   = { WEBHOOK_SECRET_KEY = data.google_secret_manager_secret.webhook_key.secret_id }
  }

  fn = {
    submit = {
      timeout = 60
      memory  = "512Mi"
      env = {
        AUTH_GOOGLE_AUDIENCE = local.url["submit"]
        # Public submit admits only the Google-signed callers named here (settings refuse to
        # start public without them); behind IAP, its signed header names the person.
        SUBMIT_PUBLIC       = tostring(var.allow_public_submit)
        AUTH_GOOGLE_ALLOWED = jsonencode(var.submit_allowed_principals)
        AUTH_IAP_AUDIENCE   = var.dashboard_iap ? local.iap_audience : ""
        # On Cloud Run, HS256 tokens must name this issuer and audience (settings refuse a
        # secret without them): mint with `python main.py token` given the same two values.
        AUTH_HS256_ISSUER   = "${var.name}-callers"
        AUTH_HS256_AUDIENCE = local.url["submit"]
        # Checked when a job or a schedule is written, and set when an owner rotates a secret.
        MAX_RUN_AHEAD_DAYS       = tostring(var.max_run_ahead_days)
        MAX_SCHEDULES_PER_OWNER  = tostring(var.max_schedules_per_owner)
        SCHEDULE_MIN_INTERVAL_S  = tostring(var.schedule_min_interval_s)
        WEBHOOK_ROTATION_GRACE_S = tostring(var.webhook_rotation_grace_s)
        # Only reported: GET /limits tells callers (and `limit list`) the stack's default.
        OWNER_MAX_RUNNING = tostring(var.owner_max_running)
        # functions-framework's request threads, equal to the instance's request concurrency:
        # the share of threads that ?wait= may hold (WAIT_SHARE) is counted from it.
        THREADS = tostring(var.concurrency.submit)
      }
      # The public API: still private by IAM unless allow_public_submit.
      ingress = "ALLOW_ALL"
    }
    process = {
      # Equal to the push subscription's ack deadline: the handler's limit is cut below it.
      timeout = var.ack_deadline_s
      memory  = "1Gi"
      # A claim takes one of the owner's slots or parks the job; a job's end sends its webhook.
      env = {
        OWNER_MAX_RUNNING    = tostring(var.owner_max_running)
        WEBHOOK_MAX_ATTEMPTS = tostring(var.webhook_max_attempts)
        WEBHOOK_TIMEOUT_S    = tostring(var.webhook_timeout_s)
        # Written to flow_limits by each instance's first claim (docs/flow-control.md).
        PRESET_LIMITS = jsonencode(var.preset_limits)
      }
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
        # Republishes parked jobs as slots free up, and delivers the webhooks still due.
        OWNER_MAX_RUNNING    = tostring(var.owner_max_running)
        WEBHOOK_MAX_ATTEMPTS = tostring(var.webhook_max_attempts)
        WEBHOOK_TIMEOUT_S    = tostring(var.webhook_timeout_s)
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
    # Built by our own account into our own repository (with its cleanup policy), not by the
    # default Cloud Build account into gcf-artifacts.
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id
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
      # The Cloud Functions API adds this to every gen2 function; stated here, so that later
      # plans show no diff on all three functions.
      LOG_EXECUTION_ID = "true"
    })

    dynamic "secret_environment_variables" {
      for_each = local.secret_env[each.key]
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value
        # A pinned version: a new one reaches the fleet only with the next apply, all at once,
        # never instance by instance as `latest` would (a fleet mixing two keys).
        version = local.secret_version[secret_environment_variables.value]
      }
    }
  }

  # Cloud Run checks, when it deploys a revision, that the runtime account may read its secrets;
  # the build account must hold its role before the first build; the APIs must be on.
  depends_on = [
    google_secret_manager_secret_iam_member.hs256_reader,
    google_secret_manager_secret_iam_member.webhook_key_reader,
    google_project_iam_member.build_log_writer,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_service.api,
  ]

  lifecycle {
    # Terraform creates the functions; cloudbuild.yaml deploys each new version of the code
    # (gcloud functions deploy --source), so the source is not Terraform's to roll back.
    ignore_changes = [build_config[0].source]
    precondition {
      condition     = local.connections_with_headroom <= local.connection_budget
      error_message = "max_instances x (db_pool_size + db_max_overflow) x (1 + instance_overshoot_ratio) exceeds db_max_connections - db_reserved_connections."
    }
    precondition {
      condition     = !var.allow_public_submit || length(var.submit_allowed_principals) > 0
      error_message = "allow_public_submit needs submit_allowed_principals: a public submit would take any Google-signed ID token from any project."
    }
    precondition {
      condition     = var.sweep_time_budget_s < var.sweep_timeout_s
      error_message = "sweep_time_budget_s must be shorter than sweep_timeout_s."
    }
    precondition {
      condition     = var.ack_deadline_s >= 10 && var.ack_deadline_s <= 600
      error_message = "ack_deadline_s must be within Pub/Sub's 10..600 seconds."
    }
    precondition {
      condition     = !var.db_private_ip || (var.vpc_connector != "" && var.db_network != "")
      error_message = "db_private_ip = true needs db_network and vpc_connector: without a Serverless VPC Access connector the functions cannot reach a private IP."
    }
    precondition {
      condition     = var.concurrency.sweep >= 2
      error_message = "concurrency.sweep must be at least 2: an overlapping Scheduler call must reach sweep (which answers 'another-pass-running') instead of getting 429 from Cloud Run."
    }
    precondition {
      condition     = local.per_instance_connections >= var.concurrency.sweep + 1
      error_message = "db_pool_size + db_max_overflow must be at least concurrency.sweep + 1: a sweep pass holds its lock connection and a working one, and each overlapping call needs one."
    }
  }
}

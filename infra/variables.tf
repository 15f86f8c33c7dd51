variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Cloud SQL instance and the scheduler job."
  type        = string
  default     = "europe-west1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "jobs"
}

variable "source_bucket" {
  description = "Bucket holding the functions' source archive (cloudbuild.yaml uploads it)."
  type        = string
}

variable "source_object" {
  description = "The source archive's object name in source_bucket."
  type        = string
  default     = "source/jobs-pipeline.zip"
}

# --- Cloud SQL -------------------------------------------------------------------------------

variable "db_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-1-3840"
}

variable "db_availability_type" {
  description = "REGIONAL (high availability: a standby in another zone, about twice the price) or ZONAL (a trial, or when an hour's outage on a zone failure is acceptable)."
  type        = string
  default     = "REGIONAL"
  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.db_availability_type)
    error_message = "db_availability_type must be REGIONAL or ZONAL."
  }
}

variable "db_max_connections" {
  description = "The instance's max_connections flag; see connection_budget in functions.tf."
  type        = number
  default     = 125
}

variable "hs256_secret_version" {
  description = "The HS256 secret's version submit reads (a number, never latest): bump it and apply to roll a new version out to every instance at once (docs/deploy.md, \"Rotating secrets\")."
  type        = string
  default     = "1"
}

variable "webhook_key_secret_version" {
  description = "The webhook key's version the functions read (a number, never latest)."
  type        = string
  default     = "1"
}

variable "instance_overshoot_ratio" {
  description = "Share by which Cloud Run may briefly exceed max_instances (spikes, a deploy's old and new revisions); the connection budget holds it."
  type        = number
  default     = 0.2
}

variable "db_reserved_connections" {
  description = "Connections kept free for superusers, migrations and psql."
  type        = number
  default     = 7
}

variable "db_private_ip" {
  description = "Give the instance a private IP on db_network instead of a public one."
  type        = bool
  default     = false
}

variable "db_network" {
  description = "VPC self link for the private IP (with private services access set up)."
  type        = string
  default     = ""
}

variable "vpc_connector" {
  description = "Serverless VPC Access connector the functions use to reach a private IP (required with db_private_ip)."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the Cloud SQL instance from deletion: by Terraform and at the API level."
  type        = bool
  default     = true
}

variable "db_disk_autoresize_limit_gb" {
  description = "The instance's disk grows automatically up to this size (GB)."
  type        = number
  default     = 100
}

variable "db_maintenance_window" {
  description = "When Cloud SQL may restart the instance for updates: day 1-7 (Monday = 1), hour 0-23 UTC."
  type        = object({ day = number, hour = number })
  default     = { day = 7, hour = 3 }
}

# --- Functions -------------------------------------------------------------------------------

variable "db_pool_size" {
  description = "DB_POOL_SIZE of every function instance."
  type        = number
  default     = 2
}

variable "db_max_overflow" {
  description = "DB_MAX_OVERFLOW of every function instance."
  type        = number
  default     = 1
}

variable "max_instances" {
  description = "Max instances per function. Together with the pool they must fit max_connections."
  type        = object({ submit = number, process = number, sweep = number })
  default     = { submit = 10, process = 20, sweep = 1 }
}

variable "concurrency" {
  description = <<-EOT
    Requests one instance serves at once (a connection is held per statement only). sweep needs at
    least 2 on its single instance, so that a Scheduler call overlapping a running pass gets the
    clean "another-pass-running" answer instead of a 429 (see functions.tf).
  EOT
  type        = object({ submit = number, process = number, sweep = number })
  default     = { submit = 8, process = 8, sweep = 2 }
}

variable "ack_deadline_s" {
  description = "Ack deadline of the jobs push subscription, and process's timeout (max 600)."
  type        = number
  default     = 600
}

variable "sweep_timeout_s" {
  description = "Timeout of the sweep function."
  type        = number
  default     = 300
}

variable "sweep_time_budget_s" {
  description = "A sweep pass stops taking work after this; must stay under sweep_timeout_s."
  type        = number
  default     = 240
}

variable "sweep_schedule" {
  description = "Cron schedule of the sweep (Cloud Scheduler's minimum is every minute)."
  type        = string
  default     = "* * * * *"
}

variable "retention_days" {
  description = "Terminal jobs older than this are deleted by the sweep."
  type        = number
  default     = 30
}

variable "max_delivery_attempts" {
  description = "Deliveries of a job message before it goes to the dead-letter topic (5-100)."
  type        = number
  default     = 5
}

variable "allow_public_submit" {
  description = <<-EOT
    Let anyone reach submit over HTTPS (allUsers invoker). submit then admits, of the
    Google-signed callers, only those submit_allowed_principals names (required: the plan and
    submit itself refuse a public submit without it), and HS256 tokens minted with our secret.
    Off by default: only submit_invokers may call it.
  EOT
  type        = bool
  default     = false
}

variable "submit_allowed_principals" {
  description = "Google-signed callers submit admits (AUTH_GOOGLE_ALLOWED): verified emails, or owners as google:<sub>. Required with allow_public_submit; when empty, Cloud Run IAM alone decides."
  type        = list(string)
  default     = []
}

variable "dashboard_iap" {
  description = "submit is behind Identity-Aware Proxy (enable it on the service: docs/deploy.md, \"Signing in to the dashboard\"): submit verifies IAP's signed header and each person is their own owner."
  type        = bool
  default     = false
}

variable "dashboard_users" {
  description = "Who may pass IAP to the dashboard (roles/iap.httpsResourceAccessor), e.g. user:alice@example.com or group:team@example.com."
  type        = list(string)
  default     = []
}

variable "submit_invokers" {
  description = "IAM members allowed to call submit when it is private (e.g. serviceAccount:...)."
  type        = list(string)
  default     = []
}

variable "submit_caller_impersonators" {
  description = <<-EOT
    IAM members (e.g. user:you@example.com) who may impersonate the caller service account to mint
    ID tokens for submit: the way a person tries the API (docs/deploy.md, "Try it").
  EOT
  type        = list(string)
  default     = []
}

# --- Fair share, schedules and webhooks ----------------------------------------------------------
# Each is passed to the functions that read it (local.fn in functions.tf); the bounds are those
# of common/settings.py, so a value a function would refuse at start-up fails the plan instead.

variable "preset_limits" {
  description = <<-EOT
    PRESET_LIMITS: per preset, at most max_running PROCESSING jobs and at most max_starts starts
    per interval_s seconds, shared by every owner (docs/flow-control.md). process writes them to
    the flow_limits table on its first claim; a preset left out has no limit.
  EOT
  type = map(object({
    max_running = optional(number)
    max_starts  = optional(number)
    interval_s  = optional(number)
  }))
  default = {}
  validation {
    condition = alltrue([for name, l in var.preset_limits :
      (l.max_running != null || l.max_starts != null)
      && (l.max_starts == null) == (l.interval_s == null)
      && (l.max_running == null ? true : l.max_running >= 1 && l.max_running <= 100000 && floor(l.max_running) == l.max_running)
      && (l.max_starts == null ? true : l.max_starts >= 1 && l.max_starts <= 1000000 && floor(l.max_starts) == l.max_starts)
      && (l.interval_s == null ? true : l.interval_s > 0 && l.interval_s <= 604800)
    ])
    error_message = "Each preset limit needs max_running (1-100000) or max_starts (1-1000000) with interval_s (0-604800 s); max_starts and interval_s come together."
  }
}

variable "owner_max_running" {
  description = <<-EOT
    OWNER_MAX_RUNNING: PROCESSING jobs per owner, 0 = unlimited (the default). process applies it
    when it claims a job, sweep when it republishes parked ones; per-owner overrides live in the
    owner_limits table (`python main.py limit set OWNER N`); submit reports it (GET /limits).
  EOT
  type        = number
  default     = 0
  validation {
    condition     = var.owner_max_running >= 0 && var.owner_max_running <= 100000 && floor(var.owner_max_running) == var.owner_max_running
    error_message = "owner_max_running must be a whole number from 0 (unlimited) to 100000."
  }
}

variable "max_schedules_per_owner" {
  description = "MAX_SCHEDULES_PER_OWNER: schedules an owner may keep (submit)."
  type        = number
  default     = 100
  validation {
    condition     = var.max_schedules_per_owner >= 0 && var.max_schedules_per_owner <= 100000 && floor(var.max_schedules_per_owner) == var.max_schedules_per_owner
    error_message = "max_schedules_per_owner must be a whole number from 0 to 100000."
  }
}

variable "schedule_min_interval_s" {
  description = "SCHEDULE_MIN_INTERVAL_S: shortest time between two fires of a schedule (submit checks it when a schedule is written)."
  type        = number
  default     = 60
  validation {
    condition     = var.schedule_min_interval_s >= 60 && var.schedule_min_interval_s <= 31536000 && floor(var.schedule_min_interval_s) == var.schedule_min_interval_s
    error_message = "schedule_min_interval_s must be a whole number of seconds from 60 to 31536000 (a year)."
  }
}

variable "max_run_ahead_days" {
  description = "MAX_RUN_AHEAD_DAYS: how many days ahead a job may ask to run (run_at, delay_s; submit)."
  type        = number
  default     = 30
  validation {
    condition     = var.max_run_ahead_days >= 1 && var.max_run_ahead_days <= 3650 && floor(var.max_run_ahead_days) == var.max_run_ahead_days
    error_message = "max_run_ahead_days must be a whole number from 1 to 3650."
  }
}

variable "webhook_max_attempts" {
  description = "WEBHOOK_MAX_ATTEMPTS: attempts before a completion webhook is given up (process and sweep deliver)."
  type        = number
  default     = 10
  validation {
    condition     = var.webhook_max_attempts >= 1 && var.webhook_max_attempts <= 50 && floor(var.webhook_max_attempts) == var.webhook_max_attempts
    error_message = "webhook_max_attempts must be a whole number from 1 to 50."
  }
}

variable "webhook_timeout_s" {
  description = "WEBHOOK_TIMEOUT_S: one delivery attempt's connect and read timeout, seconds (process and sweep)."
  type        = number
  default     = 10
  validation {
    condition     = var.webhook_timeout_s > 0 && var.webhook_timeout_s <= 30
    error_message = "webhook_timeout_s must be more than 0 and at most 30 seconds."
  }
}

variable "webhook_rotation_grace_s" {
  description = "WEBHOOK_ROTATION_GRACE_S: how long a rotated-out signing secret still signs deliveries (submit sets it at rotation)."
  type        = number
  default     = 86400
  validation {
    condition     = var.webhook_rotation_grace_s >= 0 && var.webhook_rotation_grace_s <= 2592000
    error_message = "webhook_rotation_grace_s must be from 0 to 2592000 seconds (30 days)."
  }
}

# --- Delivery ----------------------------------------------------------------------------------

variable "build_repository" {
  description = <<-EOT
    A Cloud Build (2nd gen) repository, projects/P/locations/REGION/connections/C/repositories/R,
    connected once in the console. When set, a trigger runs cloudbuild.yaml on every push to
    build_branch with the deployment's substitutions. Empty: no trigger (gcloud builds submit).
  EOT
  type        = string
  default     = ""
}

variable "build_branch" {
  description = "Branch regex the build trigger runs on."
  type        = string
  default     = "^main$"
}

variable "images_kept" {
  description = "Newest images of each function that the Artifact Registry cleanup policy always keeps."
  type        = number
  default     = 10
}

variable "image_max_age_days" {
  description = "Older function images than this are deleted (unless among the newest images_kept)."
  type        = number
  default     = 30
}

# --- Monitoring --------------------------------------------------------------------------------

variable "notification_channels" {
  description = <<-EOT
    Cloud Monitoring notification channel ids (projects/P/notificationChannels/N) every alert
    policy, and the budget, notifies. Empty: the alerts still open incidents in the console.
  EOT
  type        = list(string)
  default     = []
}

variable "log_metric_wait_s" {
  description = "Seconds the alert policies wait after their log-based metrics are created: the Monitoring API may not see a new metric for minutes (provider issue #11102)."
  type        = number
  default     = 180
}

variable "alert_oldest_pending_age_s" {
  description = "Alert when the oldest due job (not for later, not parked) has waited longer than this (seconds) since it became due, for 5 minutes."
  type        = number
  default     = 900
}

variable "alert_failed_ratio" {
  description = "Alert when more than this share of the jobs that finished in 10 minutes FAILED."
  type        = number
  default     = 0.2
}

variable "alert_sweep_absent_minutes" {
  description = "Alert when no sweep pass has been reported for this many minutes."
  type        = number
  default     = 10
}

variable "alert_jobs_oldest_unacked_s" {
  description = "Alert when a job message has waited this long on the jobs subscription (Pub/Sub's own metric, independent of the sweep)."
  type        = number
  default     = 900
}

variable "alert_submit_5xx_ratio" {
  description = "Alert when more than this share of submit's answers in 5 minutes are 5xx."
  type        = number
  default     = 0.05
}

# --- Budget (optional) -------------------------------------------------------------------------

variable "billing_account" {
  description = "Billing account id (XXXXXX-XXXXXX-XXXXXX). When set, a budget alert covers this project."
  type        = string
  default     = ""
}

variable "budget_amount" {
  description = "Monthly budget, in the billing account's currency (whole units). Alerts at 75 %, 90 % and 100 % of spend and 100 % of the forecast: the default profile idles at about 105 a month (docs/deploy.md, \"What it costs\"), so 200 stays quiet at idle."
  type        = number
  default     = 200
}

variable "long_job_max_s" {
  description = "The longest time limit a long preset may declare (LONG_JOB_MAX_S); the Cloud Run job's task timeout is this plus 10 minutes, within a task's 168 h."
  type        = number
  default     = 86400
  validation {
    condition     = var.long_job_max_s > 0 && var.long_job_max_s <= 168 * 3600 - 600
    error_message = "long_job_max_s must be between 1 and 604200 (168 h less the 10 minutes kept for the write)."
  }
}

variable "long_job_image" {
  description = "The image the long-job executions start with; cloudbuild.yaml deploys the real one (execute.Dockerfile) on each build."
  type        = string
  default     = "us-docker.pkg.dev/cloudrun/container/job:latest"
}

variable "long_job_cpu" {
  description = "CPUs of a long-job execution."
  type        = string
  default     = "1"
}

variable "long_job_memory" {
  description = "Memory of a long-job execution."
  type        = string
  default     = "1Gi"
}

# What operators see, as code: log-based metrics from the sweep's report and the functions' log
# lines, alert policies on them and on Pub/Sub's and Cloud Run's own metrics, and a dashboard.
# docs/deploy.md ("Reading the dashboard", "What each alert means") explains every figure.
#
# Log-based metrics rather than custom metrics: the sweep already writes one JSON report a minute
# (common/maintenance/sweep.py, "sweep pass") and the worker one line per finished attempt
# (common/worker.py, "job attempt finished"), so no code writes to the Monitoring API and no
# credentials or quota are spent on it; the cost is the log volume already paid for.
#
# Log-based metrics are DELTA metrics. A figure from the report (a queue depth, an age) is a
# DISTRIBUTION with one value per pass; read it with ALIGN_MEAN over a minute (one pass a minute,
# so the mean is that pass's value, exact: Monitoring keeps a distribution's mean, not just buckets).

locals {
  run_revision = "resource.type=\"cloud_run_revision\""
  log_of = {
    for f in local.functions : f => "${local.run_revision} AND resource.labels.service_name=\"${var.name}-${f}\""
  }
  sweep_report = "${local.log_of["sweep"]} AND jsonPayload.message=\"sweep pass\""

  # One value per sweep pass, from its JSON report (summary.*).
  sweep_figures = {
    queue_pending = {
      field       = "jsonPayload.summary.queue.depth.PENDING"
      unit        = "1"
      description = "Jobs PENDING (queued or waiting out a retry backoff), per sweep pass."
    }
    queue_processing = {
      field       = "jsonPayload.summary.queue.depth.PROCESSING"
      unit        = "1"
      description = "Jobs PROCESSING (a worker holds the lease), per sweep pass."
    }
    queue_due = {
      field       = "jsonPayload.summary.queue.pending_due"
      unit        = "1"
      description = "PENDING jobs that are due (not parked, their time has come): they wait on a worker, per sweep pass."
    }
    queue_parked = {
      field       = "jsonPayload.summary.queue.pending_parked"
      unit        = "1"
      description = "PENDING jobs parked by their owner's limit (waiting for a free slot), per sweep pass."
    }
    oldest_pending_age = {
      field       = "jsonPayload.summary.queue.oldest_pending_age_s"
      unit        = "s"
      description = "How long the oldest due job has waited since it became due, per sweep pass (no value while none is due). Run-later and parked jobs are not counted."
    }
    expired_leases = {
      field       = "jsonPayload.summary.queue.expired_leases"
      unit        = "1"
      description = "PROCESSING jobs whose lease has expired (their worker died), per sweep pass."
    }
    dead_letters_ignored = {
      field       = "jsonPayload.summary.steps.dead_letters.ignored"
      unit        = "1"
      description = "Dead-lettered messages the sweep acknowledged without a change (their job had moved on), per sweep pass."
    }
    delivery_failed = {
      field       = "jsonPayload.summary.steps.dead_letters.delivery_failed"
      unit        = "1"
      description = "Dead-lettered messages whose job never ran, dispatched again, per sweep pass."
    }
    undeliverable = {
      field       = "jsonPayload.summary.steps.dead_letters.undeliverable"
      unit        = "1"
      description = "Jobs given up as FAILED Undeliverable after the delivery budget, per sweep pass."
    }
  }

  # One count a log line.
  log_counts = {
    sweep_passes = {
      filter      = local.sweep_report
      description = "Sweep passes that reported (INFO or ERROR): the sweep's heartbeat."
      label       = null
    }
    sweep_errors = {
      filter      = "${local.log_of["sweep"]} AND severity>=ERROR"
      description = "ERROR lines of sweep: a pass with a failed step, or a crash."
      label       = null
    }
    job_finishes = {
      filter      = "${local.log_of["process"]} AND jsonPayload.message=\"job attempt finished\""
      description = "Job attempts finished by the worker, by outcome (completed, failed, cancelled, retry-scheduled, ...)."
      label       = "outcome"
    }
    # A sweep that never worked reports no pass, so an absence condition (which needs one data
    # point first) cannot see it: these count what it does instead.
    sweep_refusals = {
      filter      = "${local.log_of["sweep"]} AND (jsonPayload.message=\"sweep refused: unauthenticated\" OR jsonPayload.message=\"sweep refused: not an allowed invoker\")"
      description = "Calls sweep refused (401 or 403): Scheduler's token or invoker list is wrong, or someone else calls it."
      label       = null
    }
    sweep_schema_missing = {
      filter      = "${local.log_of["sweep"]} AND jsonPayload.message=\"sweep skipped: the database has no jobs table yet; run the migrations\""
      description = "Sweep calls that found no schema: the migrations have not run (yet)."
      label       = null
    }
    poison_messages = {
      filter      = "${local.log_of["process"]} AND jsonPayload.message=\"poison message acknowledged\""
      description = "Undecodable job messages the worker acknowledged and recorded."
      label       = null
    }
  }

  metric_type = merge(
    { for k, m in google_logging_metric.sweep_figure : k => "logging.googleapis.com/user/${m.name}" },
    { for k, m in google_logging_metric.log_count : k => "logging.googleapis.com/user/${m.name}" },
  )
  metric_filter = merge(
    { for k, t in local.metric_type : k => "metric.type=\"${t}\" AND ${local.run_revision}" },
    { scheduler_failures = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.scheduler_failures.name}\" AND resource.type=\"cloud_scheduler_job\"" },
  )

  jobs_sub           = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.process_push.name}\""
  scheduler_job      = "resource.type=\"cloud_scheduler_job\" AND resource.labels.job_id=\"${google_cloud_scheduler_job.sweep.name}\""
  dead_letter_source = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.process_push.name}\""
  dead_letter_sub    = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letters.name}\""
  submit_requests    = "metric.type=\"run.googleapis.com/request_count\" AND ${local.run_revision} AND resource.labels.service_name=\"${var.name}-submit\""
}

resource "google_logging_metric" "sweep_figure" {
  for_each        = local.sweep_figures
  name            = "${var.name}/${each.key}"
  description     = each.value.description
  filter          = local.sweep_report
  value_extractor = "EXTRACT(${each.value.field})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = each.value.unit
    display_name = "${var.name}: ${each.key}"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 32
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_logging_metric" "log_count" {
  for_each    = local.log_counts
  name        = "${var.name}/${each.key}"
  description = each.value.description
  filter      = each.value.filter

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name}: ${each.key}"

    dynamic "labels" {
      for_each = each.value.label == null ? [] : [each.value.label]
      content {
        key        = labels.value
        value_type = "STRING"
      }
    }
  }

  label_extractors = each.value.label == null ? null : {
    (each.value.label) = "EXTRACT(jsonPayload.${each.value.label})"
  }

  depends_on = [google_project_service.api]
}

# Cloud Scheduler's own record of its calls to sweep: an attempt that did not get a 2xx is logged
# at ERROR (AttemptFinished with the HTTP status). This counts from the very first call, whatever
# the sweep's code does, so it sees a sweep that never worked (wrong audience, missing invoker
# role, ingress, a crash at start).
resource "google_logging_metric" "scheduler_failures" {
  name        = "${var.name}/scheduler_failures"
  description = "Cloud Scheduler attempts to call sweep that did not succeed (ERROR AttemptFinished)."
  filter      = "${local.scheduler_job} AND severity>=ERROR"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name}: scheduler_failures"
  }

  depends_on = [google_project_service.api]
}

# --- Alert policies ------------------------------------------------------------------------------

# A log-based metric is not visible to the Monitoring API for a while after it is created: an
# alert policy created seconds later fails the apply with "Error 404: Cannot find metric(s) ...
# could take up to 10 minutes to become available" (hashicorp/terraform-provider-google#11102).
# Every policy that reads a log-based metric depends on this pause, which starts once all of them
# exist and starts again whenever one is replaced (triggers). tests/test_deploy_monitoring.py
# checks that each such policy waits.
resource "time_sleep" "log_metrics_visible" {
  create_duration = "${var.log_metric_wait_s}s"

  triggers = {
    metrics = join(",", sort(concat(
      [for m in google_logging_metric.sweep_figure : m.id],
      [for m in google_logging_metric.log_count : m.id],
      [google_logging_metric.scheduler_failures.id],
    )))
  }
}

resource "google_monitoring_alert_policy" "oldest_pending" {
  display_name          = "${var.name}: oldest due job waiting longer than ${var.alert_oldest_pending_age_s} s"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels

  conditions {
    display_name = "oldest_pending_age > ${var.alert_oldest_pending_age_s} s for 5 min"
    condition_threshold {
      filter          = local.metric_filter["oldest_pending_age"]
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_oldest_pending_age_s
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Jobs wait too long before a worker takes them. Look at the dashboard: a growing PENDING depth with few finishes means process is failing or at max instances; expired leases mean workers die mid-job. See docs/deploy.md, \"What each alert means\"."
  }

  # The log-based metrics it reads must be visible first (time_sleep above).
  depends_on = [time_sleep.log_metrics_visible]
}

resource "google_monitoring_alert_policy" "failing_jobs" {
  display_name          = "${var.name}: more than ${var.alert_failed_ratio * 100} % of finished jobs FAILED"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "failed / (completed + failed + cancelled) over 10 min"
    condition_threshold {
      filter             = "${local.metric_filter["job_finishes"]} AND metric.labels.outcome=\"failed\""
      denominator_filter = "${local.metric_filter["job_finishes"]} AND metric.labels.outcome=one_of(\"completed\", \"failed\", \"cancelled\")"
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_failed_ratio
      duration           = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Jobs end FAILED (attempts exhausted or a permanent error). Read the 'job attempt finished' lines of process with outcome=failed for their error_type. See docs/deploy.md, \"What each alert means\"."
  }

  # The log-based metrics it reads must be visible first (time_sleep above).
  depends_on = [time_sleep.log_metrics_visible]
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "${var.name}: job messages dead-lettered"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Pub/Sub forwarded messages to the dead-letter topic"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND ${local.dead_letter_source}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "dead-letter subscription backlog > 0"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.dead_letter_sub}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "oldest unacked dead letter older than 10 min (the sweep is not settling them)"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.dead_letter_sub}"
      comparison      = "COMPARISON_GT"
      threshold_value = 600
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "sweep gave jobs up as Undeliverable"
    condition_threshold {
      filter          = local.metric_filter["undeliverable"]
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Pub/Sub could not deliver job messages to process (max_delivery_attempts reached), usually because process answered 5xx/429 for minutes (database down, max instances). The sweep settles dead letters every pass: a message whose job never ran is dispatched again, one past the delivery budget ends FAILED Undeliverable. See docs/deploy.md, \"Replaying dead-lettered jobs\"."
  }

  # The log-based metrics it reads must be visible first (time_sleep above).
  depends_on = [time_sleep.log_metrics_visible]
}

resource "google_monitoring_alert_policy" "sweep_health" {
  display_name          = "${var.name}: sweep not reporting or failing"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels

  conditions {
    display_name = "no sweep pass reported for ${var.alert_sweep_absent_minutes} min"
    condition_absent {
      filter   = local.metric_filter["sweep_passes"]
      duration = "${var.alert_sweep_absent_minutes * 60}s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "sweep logged more than 2 errors in 10 min"
    condition_threshold {
      filter          = local.metric_filter["sweep_errors"]
      comparison      = "COMPARISON_GT"
      threshold_value = 2
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  # The conditions below fire for a sweep that never worked: the absence above needs one
  # reported pass first.
  conditions {
    display_name = "Cloud Scheduler's calls to sweep failed more than twice in 10 min"
    condition_threshold {
      filter          = local.metric_filter["scheduler_failures"]
      comparison      = "COMPARISON_GT"
      threshold_value = 2
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "sweep refused more than 2 calls in 10 min (401/403)"
    condition_threshold {
      filter          = local.metric_filter["sweep_refusals"]
      comparison      = "COMPARISON_GT"
      threshold_value = 2
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "sweep found no schema for 30 min (the migrations have not run)"
    condition_threshold {
      filter          = local.metric_filter["sweep_schema_missing"]
      comparison      = "COMPARISON_GT"
      threshold_value = 25
      duration        = "0s"
      aggregations {
        alignment_period     = "1800s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Nothing rescues expired leases, re-dispatches lost messages or settles dead letters while the sweep is down. Which condition fired says why: no pass reported (it stopped after working), Scheduler's calls failing (audience, invoker role, ingress, crashes: read the Scheduler job's logs), calls refused by sweep (token or SWEEP_ALLOWED_INVOKERS), errors in passes, or no schema for half an hour (the first build has not migrated). See docs/deploy.md, \"What each alert means\"."
  }

  # The log-based metrics it reads must be visible first (time_sleep above).
  depends_on = [time_sleep.log_metrics_visible]
}

# The jobs subscription, from Pub/Sub's own metrics: it needs neither the sweep nor our logs.
resource "google_monitoring_alert_policy" "jobs_backlog" {
  display_name          = "${var.name}: job messages waiting longer than ${var.alert_jobs_oldest_unacked_s} s"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels

  conditions {
    display_name = "oldest unacked job message older than ${var.alert_jobs_oldest_unacked_s} s for 5 min"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.jobs_sub}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_jobs_oldest_unacked_s
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Pub/Sub holds job messages that process has not acknowledged: process is failing (5xx, 429 at max instances), unreachable (push auth, ingress) or the database is down. This is seen by Pub/Sub itself, so it fires even when the sweep never ran. See docs/deploy.md, \"What each alert means\"."
  }
}

resource "google_monitoring_alert_policy" "submit_5xx" {
  display_name          = "${var.name}: submit answers 5xx above ${var.alert_submit_5xx_ratio * 100} %"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "5xx / all requests to submit over 5 min"
    condition_threshold {
      filter             = "${local.submit_requests} AND metric.labels.response_code_class=\"5xx\""
      denominator_filter = local.submit_requests
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_submit_5xx_ratio
      duration           = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Callers get server errors from submit: 503 while the database is unreachable, 500 on a bug ('unhandled error' lines), 429/503 from Cloud Run at max instances. See docs/deploy.md, \"What each alert means\"."
  }
}

# --- Dashboard -----------------------------------------------------------------------------------
# Two charts a row; every log-based metric above appears, with the functions' request counts and
# latencies and the dead-letter subscription's own figures (tests/test_infra.py checks the list).

locals {
  functions_filter = "${local.run_revision} AND resource.labels.service_name=one_of(\"${var.name}-submit\", \"${var.name}-process\", \"${var.name}-sweep\")"
  charts = [
    { title = "Queue depth: PENDING (per sweep pass)", filter = local.metric_filter["queue_pending"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "jobs" },
    { title = "Queue depth: PROCESSING (per sweep pass)", filter = local.metric_filter["queue_processing"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "jobs" },
    { title = "Jobs subscription: undelivered messages", filter = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.jobs_sub}", aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = [], unit = "messages" },
    { title = "Jobs subscription: oldest unacked message (s)", filter = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.jobs_sub}", aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = [], unit = "s" },
    { title = "Cloud Scheduler calls to sweep, by response code", filter = "metric.type=\"cloudscheduler.googleapis.com/job/attempt_count\" AND ${local.scheduler_job}", aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = ["metric.label.response_code"], unit = "calls" },
    { title = "Cloud Scheduler calls to sweep that failed", filter = local.metric_filter["scheduler_failures"], aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "calls" },
    { title = "Oldest due job waiting (s)", filter = local.metric_filter["oldest_pending_age"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "s" },
    { title = "PENDING due: waiting on a worker (per sweep pass)", filter = local.metric_filter["queue_due"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "jobs" },
    { title = "PENDING parked by owner limits (per sweep pass)", filter = local.metric_filter["queue_parked"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "jobs" },
    { title = "Expired leases (per sweep pass)", filter = local.metric_filter["expired_leases"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "jobs" },
    { title = "Job attempts finished, by outcome (per minute)", filter = local.metric_filter["job_finishes"], aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = ["metric.label.outcome"], unit = "attempts" },
    { title = "Poison messages (per minute)", filter = local.metric_filter["poison_messages"], aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "messages" },
    { title = "Dead letters settled by the sweep (acknowledged on the dead-letter subscription)", filter = "metric.type=\"pubsub.googleapis.com/subscription/ack_message_count\" AND ${local.dead_letter_sub}", aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "messages" },
    { title = "Dead letters ignored by the sweep (job had moved on, per pass)", filter = local.metric_filter["dead_letters_ignored"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "messages" },
    { title = "Dead letters re-dispatched: job never ran (per pass)", filter = local.metric_filter["delivery_failed"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "jobs" },
    { title = "Jobs FAILED Undeliverable (per pass)", filter = local.metric_filter["undeliverable"], aligner = "ALIGN_MEAN", reducer = "REDUCE_MAX", group_by = [], unit = "jobs" },
    { title = "Messages forwarded to the dead-letter topic", filter = "metric.type=\"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND ${local.dead_letter_source}", aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "messages" },
    { title = "Dead-letter subscription: backlog", filter = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.dead_letter_sub}", aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = [], unit = "messages" },
    { title = "Dead-letter subscription: oldest unacked (s)", filter = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.dead_letter_sub}", aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = [], unit = "s" },
    { title = "Sweep passes (per minute)", filter = local.metric_filter["sweep_passes"], aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "passes" },
    { title = "Sweep errors (per minute)", filter = local.metric_filter["sweep_errors"], aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "lines" },
    { title = "Sweep refusals, 401/403 (per minute)", filter = local.metric_filter["sweep_refusals"], aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "calls" },
    { title = "Sweep found no schema (per minute)", filter = local.metric_filter["sweep_schema_missing"], aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [], unit = "calls" },
    { title = "Requests by function and response class (per s)", filter = "metric.type=\"run.googleapis.com/request_count\" AND ${local.functions_filter}", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["resource.labels.service_name", "metric.labels.response_code_class"], unit = "req/s" },
    { title = "Request latency p95 by function (ms)", filter = "metric.type=\"run.googleapis.com/request_latencies\" AND ${local.functions_filter}", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_95", group_by = ["resource.labels.service_name"], unit = "ms" },
    { title = "Instances by function", filter = "metric.type=\"run.googleapis.com/container/instance_count\" AND ${local.functions_filter}", aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group_by = ["resource.labels.service_name"], unit = "instances" },
    { title = "Cloud SQL connections", filter = "metric.type=\"cloudsql.googleapis.com/database/postgresql/num_backends\" AND resource.type=\"cloudsql_database\" AND resource.labels.database_id=\"${var.project_id}:${google_sql_database_instance.jobs.name}\"", aligner = "ALIGN_MEAN", reducer = "REDUCE_SUM", group_by = [], unit = "connections" },
  ]

  dashboard = {
    displayName = "${var.name} pipeline"
    mosaicLayout = {
      columns = 48
      tiles = [for i, c in local.charts : {
        xPos   = (i % 2) * 24
        yPos   = floor(i / 2) * 16
        width  = 24
        height = 16
        widget = {
          title = c.title
          xyChart = {
            dataSets = [{
              plotType       = "LINE"
              targetAxis     = "Y1"
              legendTemplate = ""
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = c.filter
                  aggregation = {
                    alignmentPeriod    = "60s"
                    perSeriesAligner   = c.aligner
                    crossSeriesReducer = c.reducer
                    groupByFields      = c.group_by
                  }
                }
              }
            }]
            yAxis = { label = c.unit, scale = "LINEAR" }
          }
        }
      }]
    }
  }
}

resource "google_monitoring_dashboard" "pipeline" {
  dashboard_json = jsonencode(local.dashboard)

  depends_on = [google_project_service.api]
}

# One service account per function, one for Cloud Scheduler, one that Pub/Sub pushes as, one for
# the Cloud Build pipeline (cloudbuild.yaml: migrations and deploys), one that builds the
# functions' images, and one that callers impersonate to invoke submit: each gets only what it uses.

locals {
  functions = toset(["submit", "process", "sweep"])
  # A Cloud SQL IAM database user is the service account's email without the domain suffix.
  db_users = {
    for f in local.functions :
    f => trimsuffix(google_service_account.function[f].email, ".gserviceaccount.com")
  }
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_service_account" "function" {
  for_each     = local.functions
  account_id   = "${var.name}-${each.key}"
  display_name = "jobs pipeline: ${each.key} function"
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name}-scheduler"
  display_name = "jobs pipeline: Cloud Scheduler calling sweep"
}

resource "google_service_account" "push" {
  account_id   = "${var.name}-push"
  display_name = "jobs pipeline: Pub/Sub pushing job messages to process"
}

resource "google_service_account" "migrate" {
  account_id   = "${var.name}-migrate"
  display_name = "jobs pipeline: Cloud Build deploys and runs the migrations"
}

# build_config.service_account of the functions: projects created since mid-2024 grant the
# default Cloud Build account nothing, so every function build names this one.
resource "google_service_account" "build" {
  account_id   = "${var.name}-build"
  display_name = "jobs pipeline: Cloud Build builds the functions' images"
}

# An invoker of submit for people and for services without a Google identity of their own: a
# person impersonates it (roles/iam.serviceAccountTokenCreator, submit_caller_impersonators) to
# mint an ID token for submit's URL with its email (docs/deploy.md, "Try it").
resource "google_service_account" "caller" {
  account_id   = "${var.name}-caller"
  display_name = "jobs pipeline: invokes submit (impersonated by people trying it)"
}

# Every function connects to Cloud SQL through the connector, logging in with IAM.
resource "google_project_iam_member" "sql_client" {
  for_each = setunion(local.functions, ["migrate"])
  project  = var.project_id
  role     = "roles/cloudsql.client"
  member   = "serviceAccount:${each.key == "migrate" ? google_service_account.migrate.email : google_service_account.function[each.key].email}"
}

resource "google_project_iam_member" "sql_instance_user" {
  for_each = local.functions
  project  = var.project_id
  role     = "roles/cloudsql.instanceUser"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# submit publishes new jobs, sweep re-dispatches, process releases parked jobs when a slot frees
# (Worker._release_parked); process and sweep announce terminal states. tests/test_deploy_grants.py
# derives each function's topics from its code and checks these grants cover them.
resource "google_pubsub_topic_iam_member" "jobs_publisher" {
  for_each = toset(["submit", "process", "sweep"])
  topic    = google_pubsub_topic.jobs.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

resource "google_pubsub_topic_iam_member" "results_publisher" {
  for_each = toset(["process", "sweep"])
  topic    = google_pubsub_topic.results.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# sweep settles dead letters from its pull subscription.
resource "google_pubsub_subscription_iam_member" "sweep_dead_letters" {
  subscription = google_pubsub_subscription.dead_letters.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.function["sweep"].email}"
}

# The HS256 secret is read by submit only (service callers' tokens). submit depends_on this grant:
# Cloud Run checks the runtime account's access to the secret when it deploys the revision.
resource "google_secret_manager_secret_iam_member" "hs256_reader" {
  secret_id = data.google_secret_manager_secret.hs256.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function["submit"].email}"
}

# The webhook key is read by every function that seals or opens owners' signing secrets: exactly
# those given WEBHOOK_SECRET_KEY in local.secret_env (submit, process and sweep). The functions
# depend_on this grant, for the same reason as the HS256 one.
resource "google_secret_manager_secret_iam_member" "webhook_key_reader" {
  for_each  = toset([for f, env in local.secret_env : f if contains(keys(env), "WEBHOOK_SECRET_KEY")])
  secret_id = data.google_secret_manager_secret.webhook_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function[each.key].email}"
}

# Pub/Sub's service agent forwards undeliverable messages: publisher on the dead-letter topic,
# subscriber on the subscription they come from. It also mints the push OIDC tokens.
resource "google_pubsub_topic_iam_member" "agent_dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_source_subscriber" {
  subscription = google_pubsub_subscription.process_push.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

resource "google_service_account_iam_member" "agent_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# The migration step reads the postgres user's password.
resource "google_secret_manager_secret_iam_member" "db_admin_reader" {
  secret_id = data.google_secret_manager_secret.db_admin_password.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.migrate.email}"
}

# Cloud Build deploys the functions as their service accounts, built by the build account.
resource "google_service_account_iam_member" "migrate_acts_as_functions" {
  for_each           = local.functions
  service_account_id = google_service_account.function[each.key].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.migrate.email}"
}

resource "google_service_account_iam_member" "migrate_acts_as_build" {
  service_account_id = google_service_account.build.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.migrate.email}"
}

# A build that names its own service account and logs with CLOUD_LOGGING_ONLY needs to write logs,
# and to read the source that `gcloud builds submit --gcs-source-staging-dir` stages in the
# source bucket (docs/deploy.md, step 6).
resource "google_project_iam_member" "migrate_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.migrate.email}"
}

resource "google_storage_bucket_iam_member" "migrate_reads_source" {
  bucket = var.source_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.migrate.email}"
}

# The function builds (what Google lists for a user-specified build account): write build logs,
# read the source archive (ours, and the copy Cloud Functions keeps in its gcf-v2-sources bucket,
# which exists only after the first deploy: hence project level) and push the image and the
# buildpacks cache to our repository only.
resource "google_project_iam_member" "build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_project_iam_member" "build_reads_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${google_service_account.build.email}"
  # Only the two buckets it reads, not every bucket of the project.
  condition {
    title       = "function sources only"
    description = "The source bucket and Cloud Functions' gcf-v2-sources bucket of this region."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${var.source_bucket}\") || resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\")"
  }
}

resource "google_artifact_registry_repository_iam_member" "build_pushes_images" {
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.build.email}"
}

# Project level, not per function: `gcloud functions deploy --source` first asks the location for
# an upload URL (generateUploadUrl, permission cloudfunctions.functions.sourceCodeSet on the
# project's location), which no per-function grant covers.
resource "google_project_iam_member" "migrate_deploys_functions" {
  project = var.project_id
  role    = "roles/cloudfunctions.developer"
  member  = "serviceAccount:${google_service_account.migrate.email}"
}

# Who may invoke each function (a gen2 function runs as the Cloud Run service of its name).
resource "google_cloud_run_service_iam_member" "process_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["process"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

resource "google_cloud_run_service_iam_member" "sweep_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["sweep"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_run_service_iam_member" "submit_caller_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["submit"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.caller.email}"
}

resource "google_service_account_iam_member" "caller_impersonators" {
  for_each           = toset(var.submit_caller_impersonators)
  service_account_id = google_service_account.caller.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = each.key
}

resource "google_cloud_run_service_iam_member" "submit_invoker" {
  for_each = toset(var.allow_public_submit ? ["allUsers"] : var.submit_invokers)
  location = var.region
  service  = google_cloudfunctions2_function.fn["submit"].name
  role     = "roles/run.invoker"
  member   = each.key
}

# Identity-Aware Proxy in front of submit (dashboard_iap): IAP's service agent invokes submit on
# behalf of the people it lets through, and dashboard_users may pass it.
resource "google_cloud_run_service_iam_member" "submit_iap_invoker" {
  count    = var.dashboard_iap ? 1 : 0
  location = var.region
  service  = google_cloudfunctions2_function.fn["submit"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-iap.iam.gserviceaccount.com"
}

resource "google_iap_web_cloud_run_service_iam_member" "dashboard_users" {
  for_each               = toset(var.dashboard_iap ? var.dashboard_users : [])
  location               = var.region
  cloud_run_service_name = google_cloudfunctions2_function.fn["submit"].name
  role                   = "roles/iap.httpsResourceAccessor"
  member                 = each.key
}

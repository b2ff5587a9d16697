use clap::Parser;
use order::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let _telemetry = distlab_platform::telemetry::init("order");
    let app = Application::build_with(settings.config, settings.config_service).await?;
    distlab_platform::http::cancel_on_signal(app.shutdown_token());
    tracing::info!(addr = %app.local_addr()?, "order service listening");
    app.run_until_stopped().await
}

using EfficientVlm.Silo;

var builder = WebApplication.CreateBuilder(args);
builder.AddFleetSilo();

var app = builder.Build();
app.MapFleetHealth();
app.Run();
